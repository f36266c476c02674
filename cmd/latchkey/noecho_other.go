//go:build !linux

package main

// noEcho is a no-op where the relay does not run in production; the
// password is then read by term.ReadPassword, which turns echo off itself.
func noEcho(fd int) (restore func(), err error) { return nil, nil }
