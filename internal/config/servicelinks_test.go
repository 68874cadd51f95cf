package config

import (
	"reflect"
	"strings"
	"testing"
)

// TestServiceLinkVariablesIgnored: the variables Kubernetes injects for a
// Service whose name starts with "fedsender" (docker links' format) load
// cleanly, for IPv4 and IPv6 cluster addresses, named and unnamed ports.
func TestServiceLinkVariablesIgnored(t *testing.T) {
	for _, tc := range []struct {
		name    string
		environ []string
	}{
		{"service fedsender-admin, named port", []string{
			"FEDSENDER_ADMIN_SERVICE_HOST=10.96.0.11",
			"FEDSENDER_ADMIN_SERVICE_PORT=8008",
			"FEDSENDER_ADMIN_SERVICE_PORT_ADMIN=8008",
			"FEDSENDER_ADMIN_PORT=tcp://10.96.0.11:8008",
			"FEDSENDER_ADMIN_PORT_8008_TCP=tcp://10.96.0.11:8008",
			"FEDSENDER_ADMIN_PORT_8008_TCP_PROTO=tcp",
			"FEDSENDER_ADMIN_PORT_8008_TCP_PORT=8008",
			"FEDSENDER_ADMIN_PORT_8008_TCP_ADDR=10.96.0.11",
		}},
		{"service fedsender, IPv6, UDP and SCTP ports, dashed port name", []string{
			"FEDSENDER_SERVICE_HOST=fd00:10:96::b",
			"FEDSENDER_SERVICE_PORT=9464",
			"FEDSENDER_SERVICE_PORT_METRICS_HTTP=9464",
			"FEDSENDER_PORT=udp://[fd00:10:96::b]:9464",
			"FEDSENDER_PORT_9464_UDP=udp://[fd00:10:96::b]:9464",
			"FEDSENDER_PORT_9464_UDP_PROTO=udp",
			"FEDSENDER_PORT_9464_UDP_PORT=9464",
			"FEDSENDER_PORT_9464_UDP_ADDR=fd00:10:96::b",
			"FEDSENDER_PORT_4000_SCTP=sctp://[fd00:10:96::b]:4000",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, minimalYAML, tc.environ...)
			if !reflect.DeepEqual(c, mustParse(t, minimalYAML)) {
				t.Errorf("service-link variables changed the configuration: %+v", c)
			}
		})
	}
}

// TestServiceLinkLookalikesRefused: a misspelt setting is still an error,
// even one that ends like a service-link variable, when its value does not
// have the service-link shape.
func TestServiceLinkLookalikesRefused(t *testing.T) {
	for _, env := range []string{
		"FEDSENDER_ADMIN_TOKN=secret",
		"FEDSENDER_ADMIN_PORT=8008",                         // a port, not tcp://addr:port
		"FEDSENDER_ADMIN_SERVICE_HOST=admin.example",        // not an IP address
		"FEDSENDER_ADMIN_SERVICE_PORT=http",                 // not a port number
		"FEDSENDER_ADMIN_SERVICE_PORT_ADMIN=99999",          // out of range
		"FEDSENDER_ADMIN_PORT_8008_TCP=tcp://10.0.0.1:9000", // port differs from the name's
		"FEDSENDER_ADMIN_PORT_8008_TCP_PROTO=udp",           // protocol differs from the name's
		"FEDSENDER_ADMIN_PORT_8008_TCP_PORT=8009",
		"FEDSENDER_ADMIN_PORT_8008_TCP_ADDR=localhost",
		"FEDSENDER_ADMIN_PORT_8008_HTTP=tcp://10.0.0.1:8008", // no such protocol
		"FEDSENDER_SERVICE_HOST=10.0.0.1 ",
	} {
		name, _, _ := strings.Cut(env, "=")
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(minimalYAML), []string{env})
			wantErr(t, err, name+": unknown environment variable")
		})
	}
}

// TestNoSettingLooksLikeAServiceLink: no setting's environment name has a
// service-link shape, so a Kubernetes Service can never set one by accident
// (a setting's name is looked up before service links are considered).
func TestNoSettingLooksLikeAServiceLink(t *testing.T) {
	for _, st := range loadSchema().settings {
		if serviceLinkName(st.env) {
			t.Errorf("%s (%s) has the shape of a Kubernetes service-link variable", st.env, st.path)
		}
	}
}
