// warrend: the node daemon (being built; see issue 9).
print("warrend: not built yet")
