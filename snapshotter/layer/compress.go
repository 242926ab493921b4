package layer

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"

	"github.com/berth-dev/berth/errdefs"
)

// Compression is the compression of a layer blob.
type Compression int

// The compressions Berth knows. Only Uncompressed, Gzip and Zstd can be
// decompressed; the others are recognised so the error can say what the blob
// is instead of failing later with a confusing tar error.
const (
	Uncompressed Compression = iota
	Gzip
	Zstd
	Bzip2
	Xz
)

// String names the compression as the media type suffixes and tools do.
func (c Compression) String() string {
	switch c {
	case Uncompressed:
		return "uncompressed"
	case Gzip:
		return "gzip"
	case Zstd:
		return "zstd"
	case Bzip2:
		return "bzip2"
	case Xz:
		return "xz"
	}
	return fmt.Sprintf("compression(%d)", int(c))
}

// OCI and Docker layer media types, as found in image manifests.
const (
	MediaTypeOCILayer                = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeOCILayerGzip            = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaTypeOCILayerZstd            = "application/vnd.oci.image.layer.v1.tar+zstd"
	MediaTypeOCINondistributable     = "application/vnd.oci.image.layer.nondistributable.v1.tar"
	MediaTypeOCINondistributableGzip = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
	MediaTypeOCINondistributableZstd = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
	MediaTypeDockerLayer             = "application/vnd.docker.image.rootfs.diff.tar"
	MediaTypeDockerLayerGzip         = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerForeignLayerGzip  = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
)

var (
	magicGzip  = []byte{0x1f, 0x8b, 0x08}
	magicZstd  = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicBzip2 = []byte{'B', 'Z', 'h'}
	magicXz    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
)

// DetectCompression tells the compression of a blob from its first bytes.
// Anything unrecognised is taken as an uncompressed tar; the tar reader
// rejects it later if it is not one.
func DetectCompression(head []byte) Compression {
	switch {
	case bytes.HasPrefix(head, magicGzip):
		return Gzip
	case bytes.HasPrefix(head, magicZstd):
		return Zstd
	case bytes.HasPrefix(head, magicBzip2):
		return Bzip2
	case bytes.HasPrefix(head, magicXz):
		return Xz
	}
	return Uncompressed
}

// CompressionFromMediaType maps a layer media type to its compression. ok is
// false for a type that is not a layer Berth can unpack (encrypted layers,
// unknown types); callers then fall back to DetectCompression or refuse.
func CompressionFromMediaType(mediaType string) (c Compression, ok bool) {
	switch mediaType {
	case MediaTypeOCILayer, MediaTypeOCINondistributable, MediaTypeDockerLayer:
		return Uncompressed, true
	case MediaTypeOCILayerGzip, MediaTypeOCINondistributableGzip,
		MediaTypeDockerLayerGzip, MediaTypeDockerForeignLayerGzip:
		return Gzip, true
	case MediaTypeOCILayerZstd, MediaTypeOCINondistributableZstd:
		return Zstd, true
	}
	return Uncompressed, false
}

// Decompress returns the uncompressed tar stream of a layer blob, detecting
// gzip, zstd or a plain tar by its magic bytes. Closing the result releases
// the decompressor; it does not close r.
func Decompress(r io.Reader) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(len(magicXz))
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("read layer header: %w", err)
	}
	return decompressAs(br, DetectCompression(head))
}

// DecompressMediaType is Decompress for a blob whose manifest media type is
// known. The media type decides; a blob whose magic bytes contradict it is
// refused, because a registry or image that lies about a layer is better
// caught here than by a tar error in the middle of an unpack. An empty or
// unknown media type falls back to detection; encrypted and other layer
// types Berth cannot unpack are refused with ErrNotImplemented.
func DecompressMediaType(r io.Reader, mediaType string) (io.ReadCloser, error) {
	want, ok := CompressionFromMediaType(mediaType)
	if !ok {
		if strings.Contains(mediaType, "+encrypted") {
			return nil, fmt.Errorf("layer media type %q: %w", mediaType, errdefs.ErrNotImplemented)
		}
		return Decompress(r)
	}
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(len(magicXz))
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("read layer header: %w", err)
	}
	// A plain tar has no magic at its start, so only a compressed blob can
	// contradict the media type; an empty blob is left to the tar reader.
	if got := DetectCompression(head); len(head) > 0 && got != want {
		return nil, fmt.Errorf("layer media type %q says %s but the blob is %s: %w",
			mediaType, want, got, errdefs.ErrInvalidArgument)
	}
	return decompressAs(br, want)
}

func decompressAs(r io.Reader, c Compression) (io.ReadCloser, error) {
	switch c {
	case Uncompressed:
		return io.NopCloser(r), nil
	case Gzip:
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, fmt.Errorf("gzip layer: %w: %w", errdefs.ErrInvalidArgument, err)
		}
		return zr, nil
	case Zstd:
		// The decoder's own goroutines only pay off for very large frames;
		// one is plenty when the disk writes are the bottleneck.
		zr, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(false))
		if err != nil {
			return nil, fmt.Errorf("zstd layer: %w: %w", errdefs.ErrInvalidArgument, err)
		}
		return zr.IOReadCloser(), nil
	}
	return nil, fmt.Errorf("%s layer: %w", c, errdefs.ErrNotImplemented)
}
