package xmatrix

import "testing"

func TestParseAuthorization(t *testing.T) {
	full := Authorization{Origin: "origin.example", Destination: "dest.example", KeyID: "ed25519:a_1", Sig: "ab+/cd"}
	tests := []struct {
		name, header string
		want         Authorization
	}{
		{"ours", `X-Matrix origin="origin.example",destination="dest.example",key="ed25519:a_1",sig="ab+/cd"`, full},
		{"synapse order", `X-Matrix origin="origin.example",key="ed25519:a_1",sig="ab+/cd",destination="dest.example"`, full},
		{"unquoted, as gomatrixserverlib accepts", `X-Matrix origin=origin.example,destination=dest.example,key=ed25519:a_1,sig=ab+/cd`, full},
		{"spaces and tabs", "  X-Matrix   origin = \"origin.example\" ,\tdestination=\"dest.example\" , key=\"ed25519:a_1\",sig=ab+/cd  ", full},
		{"case of scheme and names", `x-matrix Origin="origin.example",DESTINATION="dest.example",Key="ed25519:a_1",SIG="ab+/cd"`, full},
		{"empty elements", `X-Matrix ,origin="origin.example",,destination="dest.example",key="ed25519:a_1",sig="ab+/cd",`, full},
		{"unknown parameter ignored", `X-Matrix origin="origin.example",destination="dest.example",key="ed25519:a_1",sig="ab+/cd",extra="x, y"`, full},
		{"no destination, before Matrix 1.3", `X-Matrix origin=origin.example,key="ed25519:a_1",sig="ab+/cd"`,
			Authorization{Origin: "origin.example", KeyID: "ed25519:a_1", Sig: "ab+/cd"}},
		{"escapes in quoted value", `X-Matrix origin="o\"r\\g",key="ed25519:a_1",sig="s,ig"`,
			Authorization{Origin: `o"r\g`, KeyID: "ed25519:a_1", Sig: "s,ig"}},
		{"port and IPv6 origin", `X-Matrix origin="[::1]:8448",destination=dest.example:443,key="ed25519:a_1",sig="ab+/cd"`,
			Authorization{Origin: "[::1]:8448", Destination: "dest.example:443", KeyID: "ed25519:a_1", Sig: "ab+/cd"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAuthorization(tc.header)
			if err != nil {
				t.Fatalf("ParseAuthorization(%q): %v", tc.header, err)
			}
			if got != tc.want {
				t.Errorf("ParseAuthorization(%q)\n got %+v\nwant %+v", tc.header, got, tc.want)
			}
		})
	}
}

func TestParseAuthorizationErrors(t *testing.T) {
	tests := []struct{ name, header, problem string }{
		{"empty", ``, "want scheme X-Matrix"},
		{"other scheme", `Bearer abc`, "want scheme X-Matrix"},
		{"scheme alone", `X-Matrix`, "want scheme X-Matrix"},
		{"no space after scheme", `X-Matrix,origin=o,key=k,sig=s`, "want scheme X-Matrix"},
		{"scheme prefix", `X-Matrixx origin=o,key=k,sig=s`, "want scheme X-Matrix"},
		{"no origin", `X-Matrix key="ed25519:1",sig="s"`, "no origin parameter"},
		{"no key", `X-Matrix origin=o,sig="s"`, "no key parameter"},
		{"no sig", `X-Matrix origin=o,key="ed25519:1"`, "no sig parameter"},
		{"empty sig", `X-Matrix origin=o,key="ed25519:1",sig=""`, "no sig parameter"},
		{"spec prose name signature", `X-Matrix origin=o,key="ed25519:1",signature="s"`, "no sig parameter"},
		{"twice", `X-Matrix origin=o,origin=p,key=k,sig=s`, "parameter origin given twice"},
		{"twice in other case", `X-Matrix origin=o,ORIGIN=p,key=k,sig=s`, "parameter origin given twice"},
		{"unterminated quote", `X-Matrix origin="o,key=k,sig=s`, "unterminated quoted value"},
		{"junk after quote", `X-Matrix origin="o"x,key=k,sig=s`, "want ',' after parameter origin"},
		{"missing comma", `X-Matrix origin=o key=k,sig=s`, "want ',' after parameter origin"},
		{"no equals", `X-Matrix origin,key=k,sig=s`, "want '=' after parameter origin"},
		{"no name", `X-Matrix =o,key=k,sig=s`, "want a parameter name"},
		{"control character", "X-Matrix origin=\"o\x01\",key=k,sig=s", "control character"},
		{"quote inside bare value", `X-Matrix origin=o"p,key=k,sig=s`, "in an unquoted value"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAuthorization(tc.header)
			if err == nil {
				t.Fatalf("ParseAuthorization(%q) = %+v, want an error", tc.header, got)
			}
			assertErr(t, err, ErrBadAuthorization, tc.problem)
		})
	}
}

func TestAuthorizationStringRoundTrip(t *testing.T) {
	tests := []struct {
		auth Authorization
		want string
	}{
		{Authorization{"o.example", "d.example", "ed25519:1", "c2ln"},
			`X-Matrix origin="o.example",destination="d.example",key="ed25519:1",sig="c2ln"`},
		{Authorization{"o.example", "", "ed25519:1", "c2ln"},
			`X-Matrix origin="o.example",key="ed25519:1",sig="c2ln"`},
		{Authorization{`we"ird\`, "d, e", "ed25519:1", "c2ln"},
			`X-Matrix origin="we\"ird\\",destination="d, e",key="ed25519:1",sig="c2ln"`},
	}
	for _, tc := range tests {
		if got := tc.auth.String(); got != tc.want {
			t.Errorf("String()\n got %s\nwant %s", got, tc.want)
		}
		back, err := ParseAuthorization(tc.auth.String())
		if err != nil {
			t.Fatalf("ParseAuthorization(String()): %v", err)
		}
		if back != tc.auth {
			t.Errorf("round trip: %+v became %+v", tc.auth, back)
		}
	}
}

// FuzzParseAuthorization checks that whatever parses renders back to a
// header that parses to the same thing.
func FuzzParseAuthorization(f *testing.F) {
	f.Add(`X-Matrix origin="origin.example",destination="dest.example",key="ed25519:1",sig="abc"`)
	f.Add(`X-Matrix origin=o,key=k,sig=s`)
	f.Add(`x-matrix  Origin = "a\"b\\" , key=k,,sig="s,t"`)
	f.Fuzz(func(t *testing.T, header string) {
		a, err := ParseAuthorization(header)
		if err != nil {
			return
		}
		b, err := ParseAuthorization(a.String())
		if err != nil {
			t.Fatalf("ParseAuthorization(%q) = %+v, whose String %q does not parse: %v", header, a, a.String(), err)
		}
		if a != b {
			t.Fatalf("round trip of %q: %+v became %+v", header, a, b)
		}
	})
}
