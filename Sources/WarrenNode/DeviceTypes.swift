// Names from WireGuardDevice that collide with the LocalAPI's (both have a PeerStatus): this file
// imports only the device, so the alias means the device's.

import WireGuardDevice

typealias DevicePeerStatus = PeerStatus
