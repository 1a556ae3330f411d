import WireGuardDevice

print("warren-wireguard: not yet able to run a device (MTU would be \(WireGuardDeviceConstants.defaultMTU))")
