//go:build cgo && linux

package nsenter

/*
#cgo CFLAGS: -Wall -Wextra -Wno-unused-parameter
extern void berth_nsenter(void);
void __attribute__((constructor)) berth_nsenter_init(void) { berth_nsenter(); }
*/
import "C"

// Available reports whether the constructor is linked in (cgo builds).
const Available = true
