// MagicDNS, engine part: the resolver's UDP and TCP listeners and the upstream forwarder.
import WarrenDNS
