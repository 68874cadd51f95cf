//go:build unix

package service

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ErrDataDirInUse is returned by Run when another process holds data_dir's
// lock: two embedded NATS servers on one store would each accept PDUs, and
// one's would be lost.
var ErrDataDirInUse = errors.New("in use by another fedsender")

// lockFileName is the file in data_dir whose lock marks the store as taken,
// and whose content names the process holding it.
const lockFileName = "fedsender.lock"

// lockDataDir takes an exclusive flock on data_dir's lock file, creating
// the directory if needed, and returns the function that releases it. The
// lock lives as long as the open file: the kernel releases it when the
// process ends, even by kill -9, so a stale file never blocks a start.
func lockDataDir(dir string) (func(), error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("data_dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := io.ReadAll(io.LimitReader(f, 512))
		f.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("data_dir: lock %s: %w", path, err)
		}
		if holder = bytes.TrimSpace(holder); len(holder) == 0 {
			holder = []byte("a process that has not recorded itself yet")
		}
		return nil, fmt.Errorf("data_dir %s: %w (%s, holding %s): stop it, or give each instance its own data_dir",
			dir, ErrDataDirInUse, holder, path)
	}
	host, _ := os.Hostname()
	holder := fmt.Sprintf("pid %d on host %s, since %s\n", os.Getpid(), host, time.Now().UTC().Format(time.RFC3339))
	if err := f.Truncate(0); err == nil {
		_, err = f.WriteAt([]byte(holder), 0)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("data_dir: write %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
