import WarrenPolicy

print("warren-control")
