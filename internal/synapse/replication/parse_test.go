package replication

import "testing"

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		line  string
		want  any
		batch bool
		err   bool
	}{
		{`RDATA typing master 2 ["!r:hs1",[]]`, Row{Stream: "typing", Instance: "master", Token: 2, Data: []byte(`["!r:hs1",[]]`)}, false, false},
		{`RDATA events master batch ["ev",[]]`, Row{Stream: "events", Instance: "master", Data: []byte(`["ev",[]]`)}, true, false},
		{`POSITION events master 1 5`, Position{Stream: "events", Instance: "master", Prev: 1, New: 5}, false, false},
		{`REMOTE_SERVER_UP localhost:28483`, RemoteServerUp{Server: "localhost:28483"}, false, false},
		{`FEDERATION_ACK fedsender 0`, nil, false, false},
		{`RDATA typing master x []`, nil, false, true},
		{`RDATA typing master 2 not-json`, nil, false, true},
		{`POSITION events master 1`, nil, false, true},
	} {
		got, batch, err := parse(tc.line)
		if (err != nil) != tc.err || batch != tc.batch {
			t.Errorf("parse(%q): batch %v, err %v", tc.line, batch, err)
			continue
		}
		if r, ok := got.(Row); ok {
			w := tc.want.(Row)
			if r.Stream != w.Stream || r.Instance != w.Instance || r.Token != w.Token || string(r.Data) != string(w.Data) {
				t.Errorf("parse(%q) = %+v, want %+v", tc.line, r, w)
			}
		} else if got != tc.want {
			t.Errorf("parse(%q) = %#v, want %#v", tc.line, got, tc.want)
		}
	}
}
