package fedsenderproc

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// SocketOwner returns which of pids holds the TCP socket whose local
// address is addr ("127.0.0.1:PORT"): the process behind a connection a
// server accepted from addr. It reads /proc (Linux), so the socket must
// still be open; a server asks when it accepts the connection.
//
// /proc/net/tcp is generated a page at a time while sockets come and go,
// so one read can miss a socket that is there: a miss is read again a few
// times before it counts.
func SocketOwner(addr string, pids []int) (int, error) {
	var err error
	for range 5 {
		var pid int
		if pid, err = socketOwner(addr, pids); err == nil {
			return pid, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return 0, err
}

func socketOwner(addr string, pids []int) (int, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return 0, err
	}
	inode, err := socketInode(ap)
	if err != nil {
		return 0, err
	}
	want := "socket:[" + inode + "]"
	for _, pid := range pids {
		dir := fmt.Sprintf("/proc/%d/fd", pid)
		fds, err := os.ReadDir(dir)
		if err != nil {
			continue // the process is gone
		}
		for _, fd := range fds {
			if link, err := os.Readlink(dir + "/" + fd.Name()); err == nil && link == want {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("no process of %v holds the socket of %s (inode %s)", pids, addr, inode)
}

// socketInode finds the inode of the IPv4 TCP socket bound to local in
// /proc/net/tcp, whose addresses are little-endian hex: 0100007F:1F90.
func socketInode(local netip.AddrPort) (string, error) {
	if !local.Addr().Is4() {
		return "", fmt.Errorf("%v: only IPv4 sockets are looked up", local)
	}
	a := local.Addr().As4()
	want := fmt.Sprintf("%02X%02X%02X%02X:%04X", a[3], a[2], a[1], a[0], local.Port())
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
		fields := strings.Fields(sc.Text())
		if len(fields) < 10 || fields[1] != want {
			continue
		}
		if _, err := strconv.ParseUint(fields[9], 10, 64); err == nil && fields[9] != "0" {
			return fields[9], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("no TCP socket bound to %v in /proc/net/tcp", local)
}
