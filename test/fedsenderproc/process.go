package fedsenderproc

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// LogFile creates the file at path for a process to log to; when the test
// fails, the last keep bytes of it (0: all) are shown under the title what.
func LogFile(t testing.TB, path, what string, keep int) *os.File {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			data, _ := os.ReadFile(f.Name())
			if keep > 0 && len(data) > keep {
				data = data[len(data)-keep:]
			}
			t.Logf("%s:\n%s", what, data)
		}
		f.Close()
	})
	return f
}

// Process is a real `fedsender run` of a test.
type Process struct {
	t    testing.TB
	bin  string
	conf string
	cmd  *exec.Cmd
	log  *os.File
}

// NewProcess returns a real fedsender process (not started) running
// configuration conf, that logs to a file in dir shown (the last 8 KiB,
// under name) when the test fails, and is killed when the test ends.
func NewProcess(t testing.TB, dir, name, conf string) *Process {
	t.Helper()
	logf := LogFile(t, filepath.Join(dir, "fedsender.log"), name+"'s log (the last 8 KiB)", 8<<10)
	p := &Process{t: t, bin: Binary(t), conf: conf, log: logf}
	t.Cleanup(func() {
		if p.cmd != nil && p.cmd.ProcessState == nil {
			p.Kill9()
		}
	})
	return p
}

// Start starts the process (again).
func (p *Process) Start() {
	p.t.Helper()
	p.cmd = exec.Command(p.bin, "run", "--config", p.conf)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
}

// Kill9 kills the process with SIGKILL and reaps it.
func (p *Process) Kill9() {
	p.t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		p.t.Fatal(err)
	}
	_ = p.cmd.Wait()
}

// Pid is the running process's id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Exited reports whether the process has ended (a zombie waiting to be
// reaped).
func (p *Process) Exited() bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return true
	}
	// pid (comm) state ...: the state follows the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	return i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z'
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// Terminate sends SIGTERM and waits for the process to drain and exit, as
// Kubernetes does within terminationGracePeriodSeconds (30 s by default).
func (p *Process) Terminate() time.Duration {
	p.t.Helper()
	start := time.Now()
	p.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			p.t.Errorf("fedsender exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		p.t.Fatal("fedsender did not exit within 30s of SIGTERM")
	}
	return time.Since(start)
}
