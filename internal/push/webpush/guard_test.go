package webpush

import (
	"context"
	"errors"
	"net/netip"
	"net/url"
	"testing"
)

func TestIsPublic(t *testing.T) {
	for _, c := range []struct {
		ip     string
		public bool
	}{
		{"8.8.8.8", true},
		{"2001:4860:4860::8888", true},
		{"127.0.0.1", false},       // loopback
		{"127.200.0.1", false},     // loopback
		{"::1", false},             // loopback
		{"10.1.2.3", false},        // private
		{"172.16.0.1", false},      // private
		{"192.168.1.1", false},     // private
		{"fd00::1", false},         // unique local
		{"169.254.169.254", false}, // link-local: cloud metadata
		{"fe80::1", false},         // link-local
		{"224.0.0.1", false},       // multicast
		{"ff02::1", false},         // multicast
		{"0.0.0.0", false},         // unspecified
		{"::", false},              // unspecified
		{"0.1.2.3", false},         // this network
		{"100.64.0.1", false},      // CGNAT
		{"255.255.255.255", false}, // broadcast
		{"::ffff:127.0.0.1", false},
		{"::ffff:10.0.0.1", false},
		{"::ffff:8.8.8.8", true},
		// NAT64 and 6to4 carry an IPv4 address a translator or tunnel
		// connects to.
		{"64:ff9b::a00:5", false},       // 10.0.0.5
		{"64:ff9b::a9fe:a9fe", false},   // 169.254.169.254
		{"64:ff9b::7f00:1", false},      // 127.0.0.1
		{"64:ff9b::808:808", true},      // 8.8.8.8
		{"2002:a00:5::1", false},        // 10.0.0.5
		{"2002:808:808::1", true},       // 8.8.8.8
		{"64:ff9b:1::a00:5", false},     // local-use NAT64
		{"64:ff9b::a9fe:a9fe%1", false}, // a zone changes nothing
		{"2002:a00:5::1%eth0", false},
		{"2001:db8::1%1", false},
		// Outside 2000::/3, which netip calls global unicast all the
		// same. ::a.b.c.d (IPv4-compatible, in the reserved ::/8) is the
		// host itself once Linux's sit module is loaded: sit0 takes
		// ::127.0.0.1 and ::<each own IPv4 address>.
		{"::7f00:1", false},        // ::127.0.0.1
		{"::a00:5", false},         // ::10.0.0.5
		{"::a9fe:a9fe", false},     // ::169.254.169.254
		{"::ffff:0:7f00:1", false}, // IPv4-translated (SIIT) 127.0.0.1
		{"fec0::1", false},         // site-local (deprecated, reserved)
		{"5f00::1", false},         // SRv6 SIDs (RFC 9602)
		{"3fff::1", false},         // documentation (RFC 9637)
		{"2001:2::1", false},       // benchmarking (RFC 5180)
	} {
		if got := isPublic(netip.MustParseAddr(c.ip)); got != c.public {
			t.Errorf("isPublic(%s) = %v", c.ip, got)
		}
	}
}

// TestGuardControl: the dial hook refuses non-public addresses and
// ports not allowed, whatever name led there.
func TestGuardControl(t *testing.T) {
	cases := []struct {
		g    Guard
		addr string
		ok   bool
	}{
		{Guard{}, "8.8.8.8:443", true},
		{Guard{}, "[2001:4860:4860::8888]:443", true},
		{Guard{}, "8.8.8.8:8443", false},
		{Guard{}, "127.0.0.1:443", false},
		{Guard{}, "[::1]:443", false},
		{Guard{}, "10.0.0.1:443", false},
		{Guard{}, "169.254.169.254:443", false},
		{Guard{}, "224.0.0.1:443", false},
		{Guard{}, "0.0.0.0:443", false},
		{Guard{AllowPrivate: true}, "127.0.0.1:443", true},
		{Guard{AllowPrivate: true}, "127.0.0.1:8443", false},
		{Guard{AllowPrivate: true, Ports: []int{8443}}, "127.0.0.1:8443", true},
	}
	for _, c := range cases {
		err := c.g.control(context.Background(), "tcp", c.addr, nil)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrRefused)) {
			t.Errorf("%+v control(%s) = %v", c.g, c.addr, err)
		}
	}
}

func TestGuardCheckURL(t *testing.T) {
	cases := []struct {
		g   Guard
		url string
		ok  bool
	}{
		{Guard{}, "https://fcm.googleapis.com/fcm/send/abc", true},
		{Guard{}, "https://fcm.googleapis.com:443/fcm/send/abc", true},
		{Guard{}, "http://fcm.googleapis.com/fcm/send/abc", false},
		{Guard{}, "https://fcm.googleapis.com:8443/fcm/send/abc", false},
		{Guard{Ports: []int{443, 8443}}, "https://ntfy.example.org:8443/up123", true},
		{Guard{Hosts: []string{"fcm.googleapis.com", "*.push.services.mozilla.com"}}, "https://fcm.googleapis.com/x", true},
		{Guard{Hosts: []string{"fcm.googleapis.com", "*.push.services.mozilla.com"}}, "https://updates.push.services.mozilla.com/x", true},
		{Guard{Hosts: []string{"fcm.googleapis.com", "*.push.services.mozilla.com"}}, "https://push.services.mozilla.com.evil.example/x", false},
		{Guard{Hosts: []string{"fcm.googleapis.com"}}, "https://evil.example/x", false},
		// "*.example.org" is the subdomains of example.org: a host
		// whose name merely ends in the same letters is another's.
		{Guard{Hosts: []string{"*.push.services.mozilla.com"}}, "https://evilpush.services.mozilla.com/x", false},
		{Guard{Hosts: []string{"*.push.services.mozilla.com"}}, "https://push.services.mozilla.com/x", false},
		{Guard{Hosts: []string{"fcm.googleapis.com"}}, "https://FCM.googleapis.com./x", true},
	}
	for _, c := range cases {
		u, _ := url.Parse(c.url)
		if err := c.g.CheckURL(u); (err == nil) != c.ok {
			t.Errorf("%+v CheckURL(%s) = %v", c.g, c.url, err)
		}
	}
}

// An allow-list entry written as a fully qualified name, with its final
// dot (endpoint_hosts = ["fcm.googleapis.com."]), matches the host as an
// endpoint's host does with or without one.
func TestHostsEntryWithTrailingDot(t *testing.T) {
	g := Guard{Hosts: []string{"fcm.googleapis.com.", "*.push.services.mozilla.com."}}
	for _, s := range []string{"https://fcm.googleapis.com/x", "https://updates.push.services.mozilla.com/x"} {
		u, _ := url.Parse(s)
		if err := g.CheckURL(u); err != nil {
			t.Errorf("CheckURL(%s) = %v", s, err)
		}
	}
}
