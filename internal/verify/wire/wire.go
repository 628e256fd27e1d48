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

// TrustedProxies are the networks whose forwarding headers are believed.
type TrustedProxies []netip.Prefix

// ParseTrustedProxies parses a comma-separated list of addresses and CIDRs
// (the --trusted-proxies flag); empty gives none.
func ParseTrustedProxies(s string) (TrustedProxies, error) {
	var out TrustedProxies
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		p, ok := ParseNetwork(f)
		if !ok {
			return nil, fmt.Errorf("trusted proxy %q is neither an IP address nor a CIDR", f)
		}
		out = append(out, p)
	}
	return out, nil
}

// Contains reports whether addr is a trusted proxy.
func (t TrustedProxies) Contains(addr netip.Addr) bool {
	if !addr.IsValid() {
		return false
	}
	addr = addr.Unmap()
	for _, p := range t {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// String lists the networks, comma-separated.
func (t TrustedProxies) String() string {
	s := make([]string, len(t))
	for i, p := range t {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// ClientAddr is the address of the client behind a request that reached us
// from peer. Forwarding headers are believed only when peer is a trusted
// proxy: then the client is the right-most address of X-Forwarded-For (all
// its header lines, in order) that is not itself a trusted proxy — each
// trusted hop vouches for the one to its left, and the first untrusted hop
// could have written anything further left. When every hop is trusted, the
// left-most is the client. A hop that does not parse ends the walk: the
// trusted hop to its right is the client. Without X-Forwarded-For, a valid
// X-Real-IP is the client. IPv4-mapped addresses are returned as IPv4.
func ClientAddr(peer netip.Addr, xff []string, xRealIP string, trusted TrustedProxies) netip.Addr {
	peer = peer.Unmap()
	if !trusted.Contains(peer) {
		return peer
	}
	client := peer
	seen := false
	for i := len(xff) - 1; i >= 0; i-- {
		line := xff[i]
		for line != "" {
			var hop string
			if j := strings.LastIndexByte(line, ','); j >= 0 {
				hop, line = line[j+1:], line[:j]
			} else {
				hop, line = line, ""
			}
			hop = strings.TrimSpace(hop)
			if hop == "" {
				continue
			}
			seen = true
			a, ok := ParseHop(hop)
			if !ok {
				return client
			}
			client = a
			if !trusted.Contains(a) {
				return a
			}
		}
	}
	if !seen {
		if a, ok := ParseHop(strings.TrimSpace(xRealIP)); ok {
			return a
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
