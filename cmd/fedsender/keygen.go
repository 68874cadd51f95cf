package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/fedsender/fedsender/internal/servername"
	"github.com/fedsender/fedsender/internal/xmatrix"
)

func keygen(args []string, stdout io.Writer) error {
	fs := newFlags("keygen")
	name := fs.String("server-name", "", "the homeserver's server name (required)")
	out := fs.String("out", "", "file to write the key to (required; not overwritten)")
	version := fs.String("key-version", "", "key version (default: a_<random>)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case *name == "":
		return errors.New("--server-name is required")
	case *out == "":
		return errors.New("--out is required")
	}
	if err := servername.Validate(*name); err != nil {
		return fmt.Errorf("--server-name: %w", err)
	}
	v := *version
	if v == "" {
		v = "a_" + strconv.FormatInt(time.Now().UnixNano()%(36*36*36*36), 36)
	}
	key, err := xmatrix.GenerateKey(v)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	if _, err := f.Write(key.MarshalKeyFile()); err != nil {
		f.Close()
		return fmt.Errorf("--out: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	fmt.Fprintf(stdout, "wrote %s for %s: key %s, public key %s\n", *out, *name, key.KeyID(), encodePublic(key))
	return nil
}
