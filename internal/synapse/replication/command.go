package replication

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// ErrBadCommand wraps every reason a replication line is not understood.
var ErrBadCommand = errors.New("replication: bad command")

// Row is one RDATA row: a row Synapse's writer Instance wrote to Stream,
// at Token (the stream position; rows Synapse published with the token
// "batch" get the token of the row that closed their batch).
type Row struct {
	Stream   string
	Instance string
	Token    int64
	Data     json.RawMessage
}

// Position is a POSITION command: writer Instance of Stream moved from
// Prev to New.
type Position struct {
	Stream   string
	Instance string
	Prev     int64
	New      int64
}

// RemoteServerUp is a REMOTE_SERVER_UP command. In Synapse 1.92 it is also
// published when a server is marked down, so it is a hint, not a fact.
type RemoteServerUp struct {
	Server string
}

// parse reads one line. It returns nil, nil for commands the feed has no
// use for (REPLICATE, FEDERATION_ACK, LOCK_RELEASED, USER_SYNC, ...). A
// Row's Token is 0 with batch true for a "batch" row.
func parse(line string) (cmd any, batch bool, err error) {
	name, rest, _ := strings.Cut(line, " ")
	switch name {
	case "RDATA":
		f := strings.SplitN(rest, " ", 4)
		if len(f) != 4 {
			return nil, false, fmt.Errorf("%w: RDATA wants <stream> <instance> <token> <row>: %q", ErrBadCommand, line)
		}
		if !json.Valid([]byte(f[3])) {
			return nil, false, fmt.Errorf("%w: RDATA row is not JSON: %q", ErrBadCommand, line)
		}
		row := Row{Stream: f[0], Instance: f[1], Data: json.RawMessage(f[3])}
		if f[2] == "batch" {
			return row, true, nil
		}
		if row.Token, err = strconv.ParseInt(f[2], 10, 64); err != nil {
			return nil, false, fmt.Errorf("%w: RDATA token %q", ErrBadCommand, f[2])
		}
		return row, false, nil
	case "POSITION":
		f := strings.Fields(rest)
		if len(f) != 4 {
			return nil, false, fmt.Errorf("%w: POSITION wants <stream> <instance> <prev> <new>: %q", ErrBadCommand, line)
		}
		prev, err1 := strconv.ParseInt(f[2], 10, 64)
		next, err2 := strconv.ParseInt(f[3], 10, 64)
		if err1 != nil || err2 != nil {
			return nil, false, fmt.Errorf("%w: POSITION tokens: %q", ErrBadCommand, line)
		}
		return Position{Stream: f[0], Instance: f[1], Prev: prev, New: next}, false, nil
	case "REMOTE_SERVER_UP":
		server := strings.TrimSpace(rest)
		if server == "" {
			return nil, false, fmt.Errorf("%w: REMOTE_SERVER_UP without a server", ErrBadCommand)
		}
		return RemoteServerUp{Server: server}, false, nil
	}
	return nil, false, nil
}
