package xmatrix

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"time"

	"github.com/fedsender/fedsender/internal/canonicaljson"
)

// ServerKeys returns the signed body of GET /_matrix/key/v2/server for one
// key: server_name, verify_keys, an empty old_verify_keys, valid_until_ts,
// signed by that key. serverName should be valid (see package servername).
func ServerKeys(serverName string, key SigningKey, validUntil time.Time) ([]byte, error) {
	if err := key.validate(); err != nil {
		return nil, err
	}
	ts := validUntil.UnixMilli()
	if ts <= 0 || ts > canonicaljson.MaxInt {
		return nil, fmt.Errorf("%w: valid_until_ts %d out of range", canonicaljson.ErrInvalid, ts)
	}
	b := []byte(`{"old_verify_keys":{},"server_name":`)
	b = canonicaljson.AppendString(b, serverName)
	b = append(b, `,"valid_until_ts":`...)
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, `,"verify_keys":{`...)
	b = canonicaljson.AppendString(b, key.KeyID())
	b = append(b, `:{"key":"`...)
	b = append(b, base64.RawStdEncoding.EncodeToString(key.Public())...)
	b = append(b, `"}}}`...)
	return SignJSON(serverName, key, b)
}
