// Package resolvetest runs a small authoritative DNS server on 127.0.0.1 for
// tests that resolve Matrix server names, and gives a *net.Resolver that
// queries only it. Records are given in zone-file syntax and may be changed
// while the test runs.
package resolvetest

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/miekg/dns"
)

// DNS is a running test DNS server. It answers from its records only: a
// name without records is NXDOMAIN, a name with records but none of the
// asked type is an empty NOERROR answer.
type DNS struct {
	udpAddr, tcpAddr string

	mu      sync.Mutex
	records map[string][]dns.RR // by lower-case FQDN
	failing map[string]bool     // names answered with SERVFAIL
	queries map[query]int
}

type query struct {
	name  string
	qtype uint16
}

// NewDNS starts a server (UDP and TCP on random 127.0.0.1 ports) that stops
// when the test ends.
func NewDNS(t testing.TB) *DNS {
	t.Helper()
	d := &DNS{records: map[string][]dns.RR{}, failing: map[string]bool{}, queries: map[query]int{}}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("resolvetest: listen udp: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		pc.Close()
		t.Fatalf("resolvetest: listen tcp: %v", err)
	}
	d.udpAddr, d.tcpAddr = pc.LocalAddr().String(), ln.Addr().String()
	handler := dns.HandlerFunc(d.serve)
	udp := &dns.Server{PacketConn: pc, Handler: handler}
	tcp := &dns.Server{Listener: ln, Handler: handler}
	go udp.ActivateAndServe()
	go tcp.ActivateAndServe()
	t.Cleanup(func() {
		udp.Shutdown()
		tcp.Shutdown()
	})
	return d
}

// Resolver returns a pure-Go resolver that sends every query to d.
func (d *DNS) Resolver() *net.Resolver {
	return &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var dialer net.Dialer
			if strings.HasPrefix(network, "tcp") {
				return dialer.DialContext(ctx, "tcp", d.tcpAddr)
			}
			return dialer.DialContext(ctx, "udp", d.udpAddr)
		},
	}
}

// Add adds records in zone-file syntax, e.g.
// "a.test. 60 IN A 127.0.0.1" or
// "_matrix-fed._tcp.a.test. 60 IN SRV 10 5 8448 b.test.".
func (d *DNS) Add(t testing.TB, records ...string) {
	t.Helper()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, s := range records {
		rr, err := dns.NewRR(s)
		if err != nil || rr == nil {
			t.Fatalf("resolvetest: bad record %q: %v", s, err)
		}
		name := strings.ToLower(rr.Header().Name)
		d.records[name] = append(d.records[name], rr)
	}
}

// Remove deletes every record of name.
func (d *DNS) Remove(name string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.records, fqdn(name))
}

// Fail makes queries for name answer SERVFAIL (fail true) or normally again.
func (d *DNS) Fail(name string, fail bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.failing[fqdn(name)] = fail
}

// Queries reports how many queries of type qtype (dns.TypeA, dns.TypeSRV,
// ...) for name the server has answered.
func (d *DNS) Queries(name string, qtype uint16) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.queries[query{fqdn(name), qtype}]
}

func (d *DNS) serve(w dns.ResponseWriter, req *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true
	if len(req.Question) == 1 {
		q := req.Question[0]
		name := strings.ToLower(q.Name)
		d.mu.Lock()
		d.queries[query{name, q.Qtype}]++
		rrs, failing := d.records[name], d.failing[name]
		d.mu.Unlock()
		switch {
		case failing:
			m.Rcode = dns.RcodeServerFailure
		case len(rrs) == 0:
			m.Rcode = dns.RcodeNameError
		default:
			for _, rr := range rrs {
				if rr.Header().Rrtype == q.Qtype {
					m.Answer = append(m.Answer, dns.Copy(rr))
				}
			}
		}
	} else {
		m.Rcode = dns.RcodeFormatError
	}
	w.WriteMsg(m)
}

func fqdn(name string) string {
	return dns.Fqdn(strings.ToLower(name))
}
