// Package wire reads what a verification request carries on the wire — the
// client address behind proxies, the allowed networks, the presented key —
// with nothing but the standard library, so that its fuzz targets build
// and run quickly.
package wire

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
)

// AddrAllowed reports whether addr lies in one of the networks (IPv4 or IPv6
// addresses or CIDRs, as spec.allowedNetworks holds them). No networks allow
// every address; otherwise the zero (unknown) address is never allowed, and an
// entry that does not parse allows nothing. IPv4-mapped IPv6 addresses
// (::ffff:a.b.c.d) and networks are compared as the IPv4 they carry.
func AddrAllowed(networks []string, addr netip.Addr) bool {
	if len(networks) == 0 {
		return true
	}
	if !addr.IsValid() {
		return false
	}
	addr = addr.Unmap()
	for _, n := range networks {
		if p, ok := ParseNetwork(n); ok && p.Contains(addr) {
			return true
		}
	}
	return false
}

// ParseNetwork parses an address ("10.1.2.3", "2001:db8::1") or a CIDR
// ("10.0.0.0/8", "2001:db8::/32") into a prefix, masked, with IPv4-mapped
// IPv6 written as IPv4 ("::ffff:10.0.0.0/104" is 10.0.0.0/8).
func ParseNetwork(s string) (netip.Prefix, bool) {
	s = strings.TrimSpace(s)
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, false
		}
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, false
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() {
		if p.Bits() < 96 {
			// A mapped prefix wider than the mapped range: keep it as IPv6;
			// it then contains no unmapped IPv4 address, which is the
			// conservative reading.
			return p.Masked(), true
		}
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), true
}

// Forwarding names the header a trusted gateway writes the client's
// address into.
type Forwarding uint8

const (
	// ForwardedFor: the gateway appends the address it received the
	// request from to X-Forwarded-For (nginx's $proxy_add_x_forwarded_for,
	// Traefik, Caddy, Envoy with use_remote_address).
	ForwardedFor Forwarding = iota
	// RealIP: the gateway overwrites X-Real-IP with the client's address
	// (nginx's proxy_set_header X-Real-IP $remote_addr); X-Forwarded-For,
	// which it passes through as the client sent it, is not read.
	RealIP
)

// MaxHops bounds the hop count of one trusted-proxy entry.
const MaxHops = 16

// TrustedProxy is one --trusted-proxies entry: the network a gateway
// connects from, the header it sets, and for X-Forwarded-For how many
// addresses the gateways in front of the verifier append (the gateway
// that connects and any proxies in front of it that are part of the same
// deployment).
type TrustedProxy struct {
	Prefix netip.Prefix
	Header Forwarding
	// Hops is the number of right-most X-Forwarded-For entries the
	// gateways append (1 or more); the client is the left-most of them.
	Hops int
}

// String writes the entry in the flag's syntax: the network alone for the
// default (X-Forwarded-For, one hop).
func (p TrustedProxy) String() string {
	switch {
	case p.Header == RealIP:
		return p.Prefix.String() + "=x-real-ip"
	case p.Hops > 1:
		return fmt.Sprintf("%s=xff:%d", p.Prefix, p.Hops)
	}
	return p.Prefix.String()
}

// TrustedProxies are the gateways whose forwarding headers are believed,
// each with the header it sets.
type TrustedProxies []TrustedProxy

// ParseTrustedProxies parses the --trusted-proxies flag: comma-separated
// entries, each an address or CIDR, optionally followed by "=" and what
// that gateway sets:
//
//	10.0.0.7/32          X-Forwarded-For, one hop (the default)
//	10.0.0.0/24=xff:2    X-Forwarded-For, two proxies append
//	10.0.0.0/24=xff      the same as the default
//	127.0.0.1=x-real-ip  X-Real-IP, overwritten by the gateway; XFF ignored
//
// Empty gives none. Two entries for the same network must say the same
// thing; where networks nest, the narrowest that holds the peer decides.
func ParseTrustedProxies(s string) (TrustedProxies, error) {
	var out TrustedProxies
	seen := map[netip.Prefix]TrustedProxy{}
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		network, how, hasHow := strings.Cut(f, "=")
		p, ok := ParseNetwork(network)
		if !ok {
			return nil, fmt.Errorf("trusted proxy %q is neither an IP address nor a CIDR", network)
		}
		e := TrustedProxy{Prefix: p, Header: ForwardedFor, Hops: 1}
		if hasHow {
			var err error
			if e.Header, e.Hops, err = parseForwarding(how); err != nil {
				return nil, fmt.Errorf("trusted proxy %q: %w", f, err)
			}
		}
		if prev, dup := seen[p]; dup {
			if prev != e {
				return nil, fmt.Errorf("trusted proxy %s is listed twice, as %s and as %s", p, prev, e)
			}
			continue
		}
		seen[p] = e
		out = append(out, e)
	}
	return out, nil
}

// parseForwarding reads what follows "=" in a trusted-proxy entry.
func parseForwarding(s string) (Forwarding, int, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	switch {
	case s == "x-real-ip":
		return RealIP, 1, nil
	case s == "xff" || s == "x-forwarded-for":
		return ForwardedFor, 1, nil
	}
	name, n, ok := strings.Cut(s, ":")
	if ok && (name == "xff" || name == "x-forwarded-for") {
		hops, err := strconv.Atoi(n)
		if err != nil || hops < 1 || hops > MaxHops {
			return 0, 0, fmt.Errorf("the hop count %q is not a number from 1 to %d", n, MaxHops)
		}
		return ForwardedFor, hops, nil
	}
	return 0, 0, fmt.Errorf("%q is neither xff, xff:<hops> nor x-real-ip", s)
}

// Contains reports whether addr is a trusted proxy.
func (t TrustedProxies) Contains(addr netip.Addr) bool {
	_, ok := t.lookup(addr)
	return ok
}

// lookup returns the entry for addr: the narrowest network that holds it.
func (t TrustedProxies) lookup(addr netip.Addr) (TrustedProxy, bool) {
	if !addr.IsValid() {
		return TrustedProxy{}, false
	}
	addr = addr.Unmap()
	best, found := TrustedProxy{}, false
	for _, p := range t {
		if p.Prefix.Contains(addr) && (!found || p.Prefix.Bits() > best.Prefix.Bits()) {
			best, found = p, true
		}
	}
	return best, found
}

// String lists the entries in the flag's syntax, comma-separated.
func (t TrustedProxies) String() string {
	s := make([]string, len(t))
	for i, p := range t {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// ClientAddr is the address of the client behind a request that reached us
// from peer. Forwarding headers are believed only when peer is a trusted
// proxy, and only the header its entry names:
//
//   - X-Forwarded-For with N hops (default 1): the client is the N-th
//     address from the right of X-Forwarded-For (all its header lines, in
//     order, empty entries skipped). Those N were appended by the gateways;
//     anything further left is what the client sent and is never read.
//     With fewer entries than N, the left-most is the client (each was
//     appended by a gateway). An entry that does not parse ends the walk:
//     the entry to its right, or the peer, is the client. X-Real-IP is
//     ignored.
//   - X-Real-IP: a valid X-Real-IP is the client, else the peer; X-Forwarded-For
//     is ignored, since such a gateway passes the client's own through.
//
// Without the header its entry names, the peer is the client. IPv4-mapped
// addresses are returned as IPv4.
func ClientAddr(peer netip.Addr, xff []string, xRealIP string, trusted TrustedProxies) netip.Addr {
	peer = peer.Unmap()
	entry, ok := trusted.lookup(peer)
	if !ok {
		return peer
	}
	if entry.Header == RealIP {
		if a, ok := ParseHop(strings.TrimSpace(xRealIP)); ok {
			return a
		}
		return peer
	}
	client := peer
	left := max(entry.Hops, 1)
	for i := len(xff) - 1; i >= 0 && left > 0; i-- {
		line := xff[i]
		for line != "" && left > 0 {
			var hop string
			if j := strings.LastIndexByte(line, ','); j >= 0 {
				hop, line = line[j+1:], line[:j]
			} else {
				hop, line = line, ""
			}
			if hop = strings.TrimSpace(hop); hop == "" {
				continue
			}
			a, ok := ParseHop(hop)
			if !ok {
				return client
			}
			client = a
			left--
		}
	}
	return client
}

// ParseHop parses one forwarding hop: an IPv4 or IPv6 address, optionally
// with a port ("1.2.3.4:5678", "[2001:db8::1]:443") or in brackets; zones
// are refused. IPv4-mapped addresses are returned as IPv4.
func ParseHop(s string) (netip.Addr, bool) {
	if s == "" {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		host := s
		if h, _, err := net.SplitHostPort(s); err == nil {
			host = h
		} else if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
			host = s[1 : len(s)-1]
		}
		if a, err = netip.ParseAddr(host); err != nil {
			return netip.Addr{}, false
		}
	}
	if a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// PeerAddr parses an http.Request.RemoteAddr ("host:port").
func PeerAddr(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap()
	}
	a, _ := ParseHop(remote)
	return a
}

// Headers a trusted proxy forwards the client's address in.
const (
	HeaderForwardedFor = "X-Forwarded-For"
	HeaderRealIP       = "X-Real-IP"
)

// ClientAddrOf is ClientAddr for an HTTP request: its peer and its
// forwarding headers.
func ClientAddrOf(r *http.Request, trusted TrustedProxies) netip.Addr {
	return ClientAddr(PeerAddr(r.RemoteAddr), r.Header.Values(HeaderForwardedFor), r.Header.Get(HeaderRealIP), trusted)
}

// Header names the key is read from.
const (
	HeaderAuthorization = "Authorization"
	HeaderAPIKey        = "X-API-Key"
	// bearerScheme is the scheme of Authorization, matched case-insensitively.
	bearerScheme = "bearer"
)

// KeyFrom reads the presented key: from the header named extra (when set),
// then Authorization: Bearer, then X-API-Key. "" when there is none.
func KeyFrom(h http.Header, extra string) string {
	if extra != "" {
		if v := strings.TrimSpace(h.Get(extra)); v != "" {
			return v
		}
	}
	if v := h.Get(HeaderAuthorization); v != "" {
		if scheme, token, ok := strings.Cut(strings.TrimSpace(v), " "); ok && strings.EqualFold(scheme, bearerScheme) {
			if token = strings.TrimSpace(token); token != "" {
				return token
			}
		}
	}
	return strings.TrimSpace(h.Get(HeaderAPIKey))
}
