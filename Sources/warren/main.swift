// warren: the node's CLI (being built; see issue 9).
print("warren: not built yet")
