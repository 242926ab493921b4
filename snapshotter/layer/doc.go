// Package layer applies OCI image layers (tar streams, possibly gzip or zstd
// compressed) to snapshot directories, and produces layer tars from overlay
// upper directories (Diff) or from two full trees (DiffDirs), for commit.
//
// Apply is the hot path of every pull, so it streams: the compressed blob is
// decompressed, hashed (the diff ID is the sha256 of the uncompressed tar) and
// extracted in one pass, with no temporary copy on disk.
//
// Every path a tar entry names is resolved with openat2(2) under
// RESOLVE_IN_ROOT relative to a file descriptor of the snapshot directory, so
// "..", absolute names and symlinks planted by earlier entries are all
// interpreted as if the snapshot were "/": nothing a layer says can reach a
// file outside it, and there is no check-then-use window between resolving a
// path and writing to it. Final path components are never followed (every
// syscall is an *at call with NOFOLLOW semantics on the last component).
//
// Whiteouts are handled in one of two ways (see WhiteoutMode): converted to
// overlayfs's own representation when applying straight into an overlay
// upper directory, or carried out as deletions when the directory is a full
// copy of the parent (the native snapshotter).
package layer
