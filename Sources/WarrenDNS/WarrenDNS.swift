// MagicDNS, pure part: the DNS message codec and the resolver's answer logic. No I/O here.
