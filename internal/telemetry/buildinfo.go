package telemetry

import (
	"runtime"
	"runtime/debug"
)

// Set at link time by a release build, which knows better than the build
// information (a Docker build has no .git, so no VCS stamp):
//
//	go build -ldflags "-X github.com/fedsender/fedsender/internal/telemetry.version=v1.2.3 \
//	    -X github.com/fedsender/fedsender/internal/telemetry.commit=$(git rev-parse HEAD)"
var version, commit string

// Build identifies the running binary: `fedsender version` prints it and
// the fedsender_build_info metric carries it.
type Build struct {
	Version   string // the -X version, else the main module's version, else "devel"
	Commit    string // the -X commit, else the VCS revision ("-dirty" if modified), else "unknown"
	GoVersion string // the Go release that built the binary
}

// ReadBuild returns the running binary's Build.
func ReadBuild() Build {
	b := Build{Version: version, Commit: commit, GoVersion: runtime.Version()}
	info, ok := debug.ReadBuildInfo()
	if ok {
		b.GoVersion = info.GoVersion
		if b.Version == "" && info.Main.Version != "" && info.Main.Version != "(devel)" {
			b.Version = info.Main.Version
		}
		if b.Commit == "" {
			b.Commit = vcsRevision(info.Settings)
		}
	}
	if b.Version == "" {
		b.Version = "devel"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	return b
}

func vcsRevision(settings []debug.BuildSetting) string {
	var rev string
	var modified bool
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev != "" && modified {
		rev += "-dirty"
	}
	return rev
}
