//go:build !linux

package rawio

import "syscall"

// Elsewhere than Linux the connection is used as it is (see New).
const supported = false

func rawRead(uintptr, []byte) (int, syscall.Errno)            { return 0, syscall.ENOSYS }
func rawWritev(uintptr, []syscall.Iovec) (int, syscall.Errno) { return 0, syscall.ENOSYS }
