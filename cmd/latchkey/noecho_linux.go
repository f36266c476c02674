//go:build linux

package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// noEcho turns terminal echo off on fd and returns a function that
// restores it. It is called before the prompt is printed: term.ReadPassword
// turns echo off only once it starts reading, so a password typed or pasted
// as soon as the prompt appears was echoed.
func noEcho(fd int) (restore func(), err error) {
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("read terminal settings: %w", err)
	}
	t := *old
	t.Lflag &^= unix.ECHO
	t.Lflag |= unix.ICANON | unix.ISIG
	t.Iflag |= unix.ICRNL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &t); err != nil {
		return nil, fmt.Errorf("turn terminal echo off: %w", err)
	}
	return func() { _ = unix.IoctlSetTermios(fd, unix.TCSETS, old) }, nil
}
