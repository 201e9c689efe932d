//go:build !linux

package h2client

import "net"

func sendQueued(net.Conn) (int, bool) { return 0, false }
