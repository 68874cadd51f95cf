package canonicaljson

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
)

// validCases are inputs with their canonical forms; the fuzz target seeds
// from them too.
var validCases = []struct {
	name, in, want string
}{
	{"empty object", `{}`, `{}`},
	{"empty array", `[]`, `[]`},
	{"spec example", `{"one": 1, "two": "Two"}`, `{"one":1,"two":"Two"}`},
	{"spec sort", `{"b":"2","a":"1"}`, `{"a":"1","b":"2"}`},
	{"spec nested", `{
		"auth": {
			"success": true,
			"mxid": "@john.doe:example.com",
			"profile": {
				"display_name": "John Doe",
				"three_pids": [
					{"medium": "email", "address": "john.doe@example.org"},
					{"medium": "msisdn", "address": "123456789"}
				]
			}
		}
	}`, `{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}`},
	{"spec unicode", `{"a": "日本語"}`, `{"a":"日本語"}`},
	{"spec unicode keys", `{"本": 2, "日": 1}`, `{"日":1,"本":2}`},
	{"spec escaped unicode", `{"a": "\u65E5"}`, `{"a":"日"}`},
	{"spec null", `{"a": null}`, `{"a":null}`},
	{"spec big int", `{"a": -9007199254740991}`, `{"a":-9007199254740991}`},
	{"max int", `9007199254740991`, `9007199254740991`},
	{"zero", `0`, `0`},
	{"minus zero", `-0`, `0`},
	{"minus zero in array", `[-0, -1, 10]`, `[0,-1,10]`},
	{"literals", ` [ true , false , null ] `, `[true,false,null]`},
	{"top-level string", `"x"`, `"x"`},
	{"whitespace everywhere", " \t\r\n{ \"a\" \n:\t[ 1 ,\r 2 ] } \n", `{"a":[1,2]}`},
	{"short escapes kept", `"\b\f\n\r\t\"\\"`, `"\b\f\n\r\t\"\\"`},
	{"solidus unescaped", `"\/a\/"`, `"/a/"`},
	{"u escapes of short escapes", `"\u0008\u000C\u000a\u000D\u0009\u0022\u005c"`, `"\b\f\n\r\t\"\\"`},
	{"other controls lower hex", `"\u0000\u001F\u001b\u007f"`, "\"\\u0000\\u001f\\u001b\x7f\""},
	{"html and separators raw", `"\u003c\u003e\u0026\u2028\u2029"`, "\"<>&\u2028\u2029\""},
	{"raw separators kept", "\"\u2028\u2029<>&\"", "\"\u2028\u2029<>&\""},
	{"surrogate pair", `"\uD83D\uDE00"`, `"😀"`},
	{"surrogate pair lower case", `"\ud83d\ude00x"`, `"😀x"`},
	{"raw astral", `"😀"`, `"😀"`},
	{"max code point", `"\uDBFF\uDFFF"`, "\"\U0010FFFF\""},
	{"raw U+FFFD", "\"\uFFFD\"", "\"\uFFFD\""},
	{"code point order not UTF-16", `{"😀":1,"｡":2,"z":3,"é":4}`, `{"z":3,"é":4,"｡":2,"😀":1}`},
	{"escaped keys sort decoded", `{"b":1,"\u0061":2,"\"":3,"\\":4,"\n":5}`, `{"\n":5,"\"":3,"\\":4,"a":2,"b":1}`},
	{"prefix keys", `{"ab":1,"a":2,"":3}`, `{"":3,"a":2,"ab":1}`},
	{"nested sort", `{"z":{"y":1,"x":[{"b":1,"a":2}]},"a":0}`, `{"a":0,"z":{"x":[{"a":2,"b":1}],"y":1}}`},
	{"already canonical", `{"a":{"b":[1,"c"]},"d":null}`, `{"a":{"b":[1,"c"]},"d":null}`},
	{"depth 100", strings.Repeat("[", 100) + strings.Repeat("]", 100), strings.Repeat("[", 100) + strings.Repeat("]", 100)},
	{"signatures kept", `{"signatures":{"s":{"ed25519:1":"x"}},"a":1}`, `{"a":1,"signatures":{"s":{"ed25519:1":"x"}}}`},
}

var invalidCases = []struct {
	name, in string
	problem  string // substring of the error
	offset   int
}{
	{"empty", ``, "unexpected end of input", 0},
	{"only space", `  `, "unexpected end of input", 2},
	{"float", `{"a":1.5}`, "floats are not allowed", 5},
	{"float zero", `1.0`, "floats are not allowed", 0},
	{"exponent", `[1e3]`, "floats are not allowed", 1},
	{"exponent upper", `[-1E3]`, "floats are not allowed", 1},
	{"too big", `9007199254740992`, "integer out of range", 0},
	{"too small", `[-9007199254740992]`, "integer out of range", 1},
	{"huge", `123456789012345678901234567890`, "integer out of range", 0},
	{"leading zero", `[01]`, "leading zero", 1},
	{"leading zero negative", `-01`, "leading zero", 0},
	{"plus", `+1`, "invalid character '+'", 0},
	{"lone minus", `-`, "unexpected end of input in number", 1},
	{"minus letter", `-a`, "invalid character 'a' in number", 1},
	{"invalid UTF-8", "\"a\xffb\"", "invalid UTF-8", 2},
	{"invalid UTF-8 after escape", "\"\\n\xc3\"", "invalid UTF-8", 3},
	{"raw surrogate", "\"\xed\xa0\x80\"", "invalid UTF-8", 1},
	{"overlong", "\"\xc0\xaf\"", "invalid UTF-8", 1},
	{"lone high surrogate", `"\uD800"`, "lone high surrogate", 1},
	{"high then non-low", `"\uD800\u0041"`, "lone high surrogate", 1},
	{"high then text", `"a\uD800bc"`, "lone high surrogate", 2},
	{"lone low surrogate", `"\uDC00"`, "lone low surrogate", 1},
	{"bad hex", `"\u12G4"`, "four hex digits", 1},
	{"short hex", `"\u12"`, "four hex digits", 1},
	{"bad escape", `"\x"`, "invalid escape", 1},
	{"raw control", "\"a\tb\"", "unescaped control character U+0009", 2},
	{"raw newline after escape", "\"\\t\n\"", "unescaped control character U+000a", 3},
	{"unterminated string", `"abc`, "end of input in string", 4},
	{"unterminated escape", `"\`, "end of input in string", 2},
	{"duplicate key", `{"a":1,"a":2}`, `duplicate object key "a"`, 7},
	{"duplicate key unsorted", `{"b":1,"a":2,"b":3}`, `duplicate object key "b"`, 13},
	{"duplicate key by escape", `{"a":1,"\u0061":2}`, `duplicate object key "a"`, 7},
	{"duplicate nested", `{"x":{"k":1,"j":2,"k":3}}`, `duplicate object key "k"`, 18},
	{"trailing data", `{} {}`, "trailing data", 3},
	{"trailing garbage", `1x`, "trailing data", 1},
	{"trailing comma array", `[1,]`, "invalid character ']', expected a value", 3},
	{"trailing comma object", `{"a":1,}`, "expected a string key", 7},
	{"missing colon", `{"a" 1}`, "expected ':'", 5},
	{"unquoted key", `{a:1}`, "expected a string key", 1},
	{"single quotes", `'a'`, "invalid character", 0},
	{"unclosed array", `[1`, "expected ',' or ']'", 2},
	{"unclosed object", `{"a":1`, "expected ',' or '}'", 6},
	{"bad literal", `tru`, "expected true", 0},
	{"capital literal", `True`, "invalid character 'T'", 0},
	{"NaN", `NaN`, "invalid character 'N'", 0},
	{"BOM", "\xef\xbb\xbf{}", "invalid character byte 0xef", 0},
	{"depth 101 arrays", strings.Repeat("[", 101) + strings.Repeat("]", 101), "nested deeper than 100 levels", 100},
	{"depth 101 objects", strings.Repeat(`{"a":`, 100) + "{}" + strings.Repeat("}", 100), "nested deeper than 100 levels", 500},
	{"missing comma", `[1 2]`, "after array element", 3},
}

func TestCanonicalizeValid(t *testing.T) {
	for _, tc := range validCases {
		t.Run(tc.name, func(t *testing.T) {
			got := mustCanonicalize(t, tc.in)
			if got != tc.want {
				t.Errorf("Canonicalize(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
			if again := mustCanonicalize(t, got); again != got {
				t.Errorf("not idempotent: %q -> %q", got, again)
			}
		})
	}
}

func TestCanonicalizeInvalid(t *testing.T) {
	for _, tc := range invalidCases {
		t.Run(tc.name, func(t *testing.T) {
			assertInvalid(t, tc.in, tc.problem, tc.offset)
		})
	}
}

func TestAppendKeepsPrefix(t *testing.T) {
	prefix := []byte("prefix:")
	got, err := Append(prefix, []byte(`{"b":1,"a":2}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := `prefix:{"a":2,"b":1}`; string(got) != want {
		t.Errorf("Append = %q, want %q", got, want)
	}
	got, err = Append(got, []byte(`{"a":1.5}`))
	if err == nil {
		t.Fatal("Append of a float: no error")
	}
	if want := `prefix:{"a":2,"b":1}`; string(got) != want {
		t.Errorf("after a failed Append dst = %q, want %q", got, want)
	}
}

func TestAppendString(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `""`},
		{"plain /path?q=1&x=<y>", `"plain /path?q=1&x=<y>"`},
		{"q\"b\\", `"q\"b\\"`},
		{"\b\f\n\r\t\x00\x1f\x7f", "\"\\b\\f\\n\\r\\t\\u0000\\u001f\x7f\""},
		{"é\u2028😀", "\"é\u2028😀\""},
		{"bad\xffutf8", "\"bad\uFFFDutf8\""},
	}
	for _, tc := range tests {
		if got := string(AppendString(nil, tc.in)); got != tc.want {
			t.Errorf("AppendString(%q) = %q, want %q", tc.in, got, tc.want)
		}
		// Valid strings must come out as the scanner writes them.
		if !strings.Contains(tc.in, "\xff") {
			if got := mustCanonicalize(t, tc.want); got != tc.want {
				t.Errorf("Canonicalize(%q) = %q, not canonical", tc.want, got)
			}
		}
	}
}

// TestErrorsWrapErrInvalid checks every failure through errors.Is and
// errors.As, the way callers see them.
func TestErrorsWrapErrInvalid(t *testing.T) {
	_, err := Canonicalize([]byte(`{"a":1,"a":1}`))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("error %v does not wrap ErrInvalid", err)
	}
	var ie *InputError
	if !errors.As(err, &ie) || ie.Offset != 7 {
		t.Fatalf("errors.As: %v, %+v", err, ie)
	}
	if want := `canonicaljson: invalid input: duplicate object key "a" at offset 7`; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
}

// TestPooledStateIsClean runs inputs that fail half way and then good ones,
// so that leftovers in the pooled scanner would show.
func TestPooledStateIsClean(t *testing.T) {
	for range 3 {
		for _, tc := range invalidCases {
			_, _ = Canonicalize([]byte(tc.in))
		}
		for _, tc := range validCases {
			if got := mustCanonicalize(t, tc.in); got != tc.want {
				t.Fatalf("Canonicalize(%q) = %q after failures, want %q", tc.in, got, tc.want)
			}
		}
	}
}

func TestLargeObjectReordered(t *testing.T) {
	var in, want bytes.Buffer
	in.WriteString("{")
	want.WriteString("{")
	const n = 2000
	for i := n - 1; i >= 0; i-- {
		if i != n-1 {
			in.WriteString(", ")
		}
		in.WriteString(`"k` + pad(i) + `": {"z": "\u00e9", "a": [` + pad(i) + `]}`)
	}
	for i := range n {
		if i != 0 {
			want.WriteString(",")
		}
		want.WriteString(`"k` + pad(i) + `":{"a":[` + pad(i) + `],"z":"é"}`)
	}
	in.WriteString("}")
	want.WriteString("}")
	if got := mustCanonicalize(t, in.String()); got != want.String() {
		t.Errorf("large object not sorted right: got %.200q...", got)
	}
}

// pad renders i with a fixed width, so that key order is numeric order.
func pad(i int) string { return strconv.Itoa(10000 + i) }

func mustCanonicalize(t *testing.T, in string) string {
	t.Helper()
	out, err := Canonicalize([]byte(in))
	if err != nil {
		t.Fatalf("Canonicalize(%q): %v", in, err)
	}
	return string(out)
}

func assertInvalid(t *testing.T, in, problem string, offset int) {
	t.Helper()
	out, err := Canonicalize([]byte(in))
	if err == nil {
		t.Fatalf("Canonicalize(%q) = %q, want an error about %q", in, out, problem)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("error %v does not wrap ErrInvalid", err)
	}
	var ie *InputError
	if !errors.As(err, &ie) {
		t.Fatalf("error %v is not an *InputError", err)
	}
	if !strings.Contains(ie.Problem, problem) {
		t.Errorf("Canonicalize(%q): problem %q, want it to contain %q", in, ie.Problem, problem)
	}
	if ie.Offset != offset {
		t.Errorf("Canonicalize(%q): offset %d, want %d (%v)", in, ie.Offset, offset, err)
	}
}

// TestConcurrentUse shares the pooled scanners between goroutines; run with
// -race.
func TestConcurrentUse(t *testing.T) {
	for i := range 4 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			for range 50 {
				for _, tc := range validCases {
					if got := mustCanonicalize(t, tc.in); got != tc.want {
						t.Fatalf("Canonicalize(%q) = %q, want %q", tc.in, got, tc.want)
					}
				}
			}
		})
	}
}
