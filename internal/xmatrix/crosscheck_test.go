package xmatrix

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedsender/fedsender/internal/canonicaljson"
	"github.com/fedsender/fedsender/test/prereq"
)

// crossCheckCorpus is JSON that canonicalisers get wrong: Go's own
// encoding/json among them.
var crossCheckCorpus = []string{
	`{}`,
	`[]`,
	`{"one": 1, "two": "Two"}`,
	`{"b":"2","a":"1"}`,
	`{"html":"<script>&amp;</script>","sep":"\u2028\u2029","raw":"` + "\u2028\u2029" + `"}`,
	`{"controls":"\u0000\u0001\u001f\u007f\b\f\n\r\t","slash":"\/","quote":"\"","backslash":"\\"}`,
	`{"escaped upper":"\u00C9\u00e9\u65E5\uD83D\uDE00","raw":"Éé日😀"}`,
	`{"😀":1,"｡":2,"z":3,"é":4,"Z":5,"":6,"\u0000":7}`,
	`{"b":1,"\u0061":2,"\"":3,"\\":4,"\n":5}`,
	`{"ab":1,"a":2,"a\u0000":3}`,
	`{"big":9007199254740991,"small":-9007199254740991,"zero":-0,"n":[0,1,-1,10,100]}`,
	`{"nested":{"z":{"y":{"x":[{"b":[],"a":{}}]}}},"a":[[[]],{}]}`,
	`{"null":null,"t":true,"f":false,"s":""}`,
	" \n{\t\"ws\" : [ 1 , 2 ] ,\r\n \"k\" : { } } \n",
	`"top-level string \u2028"`,
	`12345`,
	`[{"content":{"body":"Hello \ud83d\udc4b <b>world</b>","msgtype":"m.text"},"type":"m.room.message","room_id":"!r:example.org","origin_server_ts":1700000000000,"depth":42,"prev_events":["$a"],"auth_events":["$b","$c"],"hashes":{"sha256":"x/Y+z"},"signatures":{"example.org":{"ed25519:a_1":"sig"}}}]`,
	strings.Repeat("[", 100) + strings.Repeat("]", 100),
}

// crossCheckObjects are signed on both sides.
var crossCheckObjects = []string{
	`{}`,
	`{"one":1,"two":"Two"}`,
	`{"unicode":"Éé日😀\u2028","escapes":"\"\\\/\b\f\n\r\t\u0001\u007f","keys":{"é":1,"z":2,"😀":3,"｡":4}}`,
	`{"big":9007199254740991,"neg":-9007199254740991,"zero":-0,"nested":{"a":[{"b":{"c":[null,true,false]}}]}}`,
	`{"content":{"x":1},"unsigned":{"age":12,"f":"kept but not signed"},"signatures":{"third.example":{"ed25519:t":"dGhpcmQ"}}}`,
	`{"type":"m.room.message","room_id":"!OGEhHVWSdvArJzumhm:matrix.org","content":{"body":"<b>hi</b> & bye","msgtype":"m.text"},"origin_server_ts":1700000000000}`,
}

type crossRequest struct {
	Method        string  `json:"method"`
	URI           string  `json:"uri"`
	Destination   string  `json:"destination"`
	Body          *string `json:"body"`
	Authorization string  `json:"authorization,omitempty"`
}

func crossCheckRequests(t *testing.T) []crossRequest {
	t.Helper()
	body := func(s string) *string { return &s }
	txn := `{"origin":"go.example","origin_server_ts":1700000000000,"pdus":[` + crossCheckObjects[5] + `,` + crossCheckObjects[2] + `],"edus":[{"edu_type":"m.typing","content":{"room_id":"!r:x","user_id":"@é:go.example","typing":true}}]}`
	return []crossRequest{
		{Method: "PUT", URI: "/_matrix/federation/v1/send/1700000000000-0", Destination: "dest.example", Body: body(txn)},
		{Method: "PUT", URI: "/_matrix/federation/v1/send/1", Destination: "dest.example:8448", Body: body(`{"origin":"go.example","origin_server_ts":1,"pdus":[]}`)},
		{Method: "GET", URI: "/_matrix/federation/v1/query/profile?user_id=%40alice%3Adest.example&field=displayname", Destination: "dest.example"},
		{Method: "GET", URI: "/_matrix/key/v2/query/dest.example", Destination: "[2001:db8::1]:8448"},
		{Method: "POST", URI: "/_matrix/federation/v1/user/keys/query", Destination: "dest.example", Body: body(`{"device_keys":{"@a:dest.example":[]},"n":-0,"s":"\u2028<>&"}`)},
		{Method: "PUT", URI: `/_matrix/federation/v1/send/odd"\é`, Destination: "dest.example", Body: body(`{"pdus":[],"edus":[]}`)},
	}
}

// TestCrossCheckSignedJSON signs objects and requests in Go and has
// python-signedjson verify them, the reverse, and compares canonical forms
// with python-canonicaljson.
func TestCrossCheckSignedJSON(t *testing.T) {
	python := prereq.Require(t, prereq.Python)
	const goServer = "go.example"
	key := newKey(t, "go1")

	type canonicalCase struct {
		Input string `json:"input"`
		Go    string `json:"go"`
	}
	in := struct {
		GoServer    string          `json:"go_server"`
		GoKeyID     string          `json:"go_key_id"`
		GoVerifyKey string          `json:"go_verify_key"`
		GoObjects   []string        `json:"go_objects"`
		GoRequests  []crossRequest  `json:"go_requests"`
		Canonical   []canonicalCase `json:"canonical"`
		PyObjects   []string        `json:"py_objects"`
		PyRequests  []crossRequest  `json:"py_requests"`
	}{
		GoServer:    goServer,
		GoKeyID:     key.KeyID(),
		GoVerifyKey: base64.RawStdEncoding.EncodeToString(key.Public()),
		PyObjects:   crossCheckObjects,
		PyRequests:  crossCheckRequests(t),
	}
	for _, obj := range crossCheckObjects {
		signed, err := SignJSON(goServer, key, []byte(obj))
		if err != nil {
			t.Fatalf("SignJSON(%s): %v", obj, err)
		}
		in.GoObjects = append(in.GoObjects, string(signed))
	}
	serverKeys, err := ServerKeys(goServer, key, time.UnixMilli(1_800_000_000_000))
	if err != nil {
		t.Fatal(err)
	}
	in.GoObjects = append(in.GoObjects, string(serverKeys))
	for _, req := range crossCheckRequests(t) {
		var content []byte
		if req.Body != nil {
			if content, err = canonicaljson.Canonicalize([]byte(*req.Body)); err != nil {
				t.Fatalf("Canonicalize(%s): %v", *req.Body, err)
			}
		}
		req.Authorization = SignRequest(key, goServer, req.Destination, req.Method, req.URI, content)
		in.GoRequests = append(in.GoRequests, req)
	}
	for _, input := range crossCheckCorpus {
		out, err := canonicaljson.Canonicalize([]byte(input))
		if err != nil {
			t.Fatalf("Canonicalize(%q): %v", input, err)
		}
		in.Canonical = append(in.Canonical, canonicalCase{Input: input, Go: string(out)})
	}

	var out struct {
		Errors      []string       `json:"errors"`
		PyServer    string         `json:"py_server"`
		PyKeyID     string         `json:"py_key_id"`
		PyVerifyKey string         `json:"py_verify_key"`
		PyObjects   []string       `json:"py_objects"`
		PyRequests  []crossRequest `json:"py_requests"`
	}
	// Canaries: one tampered object and one wrong canonical form, which the
	// Python side must report, or it is not checking anything.
	tampered := strings.Replace(in.GoObjects[1], `"Two"`, `"Too"`, 1)
	in.GoObjects = append(in.GoObjects, tampered)
	in.Canonical = append(in.Canonical, canonicalCase{Input: `{"b":1,"a":2}`, Go: `{"b":1,"a":2}`})
	canaries := []string{
		"go object " + strconv.Itoa(len(in.GoObjects)-1) + ": signedjson rejects it",
		"canonical " + strconv.Itoa(len(in.Canonical)-1) + ": ",
	}

	runPython(t, python, "testdata/crosscheck.py", in, &out)
	for _, e := range out.Errors {
		if i := slices.IndexFunc(canaries, func(c string) bool { return strings.HasPrefix(e, c) }); i >= 0 {
			canaries = slices.Delete(canaries, i, i+1)
			continue
		}
		t.Errorf("python: %s", e)
	}
	for _, c := range canaries {
		t.Errorf("python did not report the canary %q", c)
	}
	if len(out.PyObjects) != len(crossCheckObjects) || len(out.PyRequests) != len(in.PyRequests) {
		t.Fatalf("python signed %d objects and %d requests, want %d and %d",
			len(out.PyObjects), len(out.PyRequests), len(crossCheckObjects), len(in.PyRequests))
	}

	pyPub, err := base64.RawStdEncoding.DecodeString(out.PyVerifyKey)
	if err != nil {
		t.Fatalf("python verify key %q: %v", out.PyVerifyKey, err)
	}
	for i, obj := range out.PyObjects {
		if err := VerifyJSON(out.PyServer, out.PyKeyID, pyPub, []byte(obj)); err != nil {
			t.Errorf("VerifyJSON of python object %d %s: %v", i, obj, err)
		}
	}
	for i, req := range out.PyRequests {
		auth, err := ParseAuthorization(req.Authorization)
		if err != nil {
			t.Errorf("python request %d: ParseAuthorization(%q): %v", i, req.Authorization, err)
			continue
		}
		if auth.Origin != out.PyServer || auth.Destination != req.Destination || auth.KeyID != out.PyKeyID {
			t.Errorf("python request %d: parsed %+v", i, auth)
		}
		var body []byte
		if req.Body != nil {
			body = []byte(*req.Body)
		}
		if err := VerifyRequest(pyPub, auth, req.Method, req.URI, body); err != nil {
			t.Errorf("VerifyRequest of python request %d %+v: %v", i, req, err)
		}
	}
}

// runPython runs a script with python, in as JSON on stdin and the JSON on
// its stdout decoded into out.
func runPython(t *testing.T, python, script string, in, out any) {
	t.Helper()
	input, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, script)
	cmd.Stdin = bytes.NewReader(input)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", python, script, err, stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), out); err != nil {
		t.Fatalf("%s output: %v\n%s", script, err, stdout.String())
	}
}
