// Package servername validates Matrix server names (hostname, IPv4 literal or
// bracketed IPv6 literal, with an optional port) and splits them into parts.
//
// The grammar is the one of the Matrix specification's appendix:
//
//	server_name = hostname [ ":" port ]
//	port        = 1*5DIGIT
//	hostname    = IPv4address / "[" IPv6address "]" / dns-name
//	IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT
//	IPv6address = 2*45IPv6char
//	IPv6char    = DIGIT / %x41-46 / %x61-66 / ":" / "."
//	dns-name    = 1*255dns-char
//	dns-char    = DIGIT / ALPHA / "-" / "."
//
// On top of the grammar, a port must be in 1-65535, an IPv6 literal must be a
// real IPv6 address, and a host made of four dot-separated groups of one to
// three digits must be a real IPv4 address (the grammar would also read
// "999.1.1.1" as a dns-name, but no resolver treats it as one).
package servername
