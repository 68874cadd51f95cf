//go:build !unix

package service

import "errors"

// ErrDataDirInUse is returned by Run when another process holds data_dir's
// lock. Locking needs flock, so it is only taken on Unix systems.
var ErrDataDirInUse = errors.New("in use by another fedsender")

// lockDataDir takes no lock on systems without flock: fedsender's
// deployments run on Linux.
func lockDataDir(string) (func(), error) { return func() {}, nil }
