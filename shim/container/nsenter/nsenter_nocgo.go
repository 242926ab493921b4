//go:build !cgo || !linux

package nsenter

// Available reports whether the constructor is linked in: without cgo it
// is not, and container.Exec refuses.
const Available = false
