//go:build interop

package interop

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"
)

// client is a local user of Dendrite on its client API.
type client struct {
	t        *testing.T
	base     string
	UserID   string `json:"user_id"`
	Token    string `json:"access_token"`
	DeviceID string `json:"device_id"`
	hc       *http.Client
}

// register makes a local user with Dendrite's shared-secret registration
// (Synapse's admin API) and returns it logged in on a fresh device.
func (d *dendrite) register(localpart string) *client {
	d.t.Helper()
	c := &client{t: d.t, base: d.clientURL, hc: &http.Client{Timeout: 2 * time.Minute}}
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	c.do("GET", "/_synapse/admin/v1/register", nil, &nonce)
	const password = "interop-password"
	mac := hmac.New(sha1.New, []byte(d.secret))
	mac.Write([]byte(nonce.Nonce + "\x00" + localpart + "\x00" + password + "\x00notadmin"))
	c.do("POST", "/_synapse/admin/v1/register", map[string]any{
		"nonce": nonce.Nonce, "username": localpart, "password": password, "admin": false,
		"mac": hex.EncodeToString(mac.Sum(nil)),
	}, c)
	if c.Token == "" {
		d.t.Fatalf("registering %s gave no access token", localpart)
	}
	return c
}

// createRoom creates a public room, which a remote user may join.
func (c *client) createRoom() string {
	c.t.Helper()
	var room struct {
		RoomID string `json:"room_id"`
	}
	c.do("POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"}, &room)
	return room.RoomID
}

// do calls the client API as the user, failing the test on anything but
// 200, and decodes the answer into out.
func (c *client) do(method, path string, body, out any) {
	c.t.Helper()
	if status, answer := c.try(method, path, body); status != http.StatusOK {
		c.t.Fatalf("%s %s: %d: %s", method, path, status, answer)
	} else if out != nil {
		if err := json.Unmarshal(answer, out); err != nil {
			c.t.Fatalf("%s %s: %v in %s", method, path, err, answer)
		}
	}
}

// try calls the client API as the user and returns the status and body.
func (c *client) try(method, path string, body any) (int, []byte) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			c.t.Fatal(err)
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp.StatusCode, answer
}

// roomPath is the client API path of a room's endpoint.
func roomPath(roomID, rest string) string {
	return "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/" + rest
}
