// Package logfile writes and reads a container's log in the CRI format,
// with size-based rotation.
//
// # Format
//
// One line per record:
//
//	<RFC3339Nano time> <stdout|stderr> <F|P> <content>\n
//
// A line of output longer than MaxLine, or a piece of output still without
// a newline when the stream pauses, is written as P (partial) records; the
// record that ends the line is F (full). Content never contains '\n'.
//
// # Rotation
//
// When writing a record would take the file past MaxSize, the file is
// renamed to <path>.1 (older ones shift to .2 … .<MaxFiles-1>, the oldest
// is removed) and a new file is started. Readers read the rotated files
// oldest first, then the live one.
package logfile

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"time"
)

// MaxLine is the longest content a record carries; longer lines are split
// into P records (16 KiB, as the kubelet and Docker split).
const MaxLine = 16 * 1024

// Stream names an output stream in the file.
type Stream string

// The two streams a record can come from.
const (
	Stdout Stream = "stdout"
	Stderr Stream = "stderr"
)

// Writer appends records to a log file and rotates it. It is safe for
// concurrent use by the stdout and stderr copiers.
type Writer struct {
	path     string
	maxSize  int64 // <= 0: never rotate
	maxFiles int

	mu   sync.Mutex
	f    *os.File
	size int64
	now  func() time.Time
	// rec is the record being written, reused: a container's output costs
	// its shim no allocation (the shim runs without a garbage collector
	// for as long as it can; see berth-shim).
	rec []byte
}

// Open opens (appending) or creates the log file at path. maxSize <= 0
// disables rotation; maxFiles counts the live file too (at least 1).
func Open(path string, maxSize int64, maxFiles int) (*Writer, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open log %s: %w", path, err)
	}
	if maxFiles < 1 {
		maxFiles = 1
	}
	return &Writer{path: path, maxSize: maxSize, maxFiles: maxFiles, f: f, size: fi.Size(), now: time.Now}, nil
}

// WriteRecord writes one record. partial marks a P record.
func (w *Writer) WriteRecord(s Stream, content []byte, partial bool) error {
	tag := byte('F')
	if partial {
		tag = 'P'
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return fmt.Errorf("write log %s: closed", w.path)
	}
	b := w.now().UTC().AppendFormat(w.rec[:0], time.RFC3339Nano)
	b = append(b, ' ')
	b = append(b, s...)
	b = append(b, ' ', tag, ' ')
	b = append(b, content...)
	b = append(b, '\n')
	if cap(b) <= 2*MaxLine {
		w.rec = b // a longer one (a record is at most MaxLine) is not kept
	}
	if w.maxSize > 0 && w.size > 0 && w.size+int64(len(b)) > w.maxSize {
		if err := w.rotate(); err != nil {
			return err
		}
	}
	n, err := w.f.Write(b)
	w.size += int64(n)
	return err
}

// rotate shifts <path>.i to <path>.i+1, drops the oldest and starts a new
// live file. Called with mu held.
func (w *Writer) rotate() error {
	w.f.Close()
	w.f = nil
	if w.maxFiles <= 1 {
		os.Remove(w.path)
	} else {
		os.Remove(w.path + "." + strconv.Itoa(w.maxFiles-1))
		for i := w.maxFiles - 2; i >= 1; i-- {
			os.Rename(w.path+"."+strconv.Itoa(i), w.path+"."+strconv.Itoa(i+1))
		}
		if err := os.Rename(w.path, w.path+".1"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rotate log %s: %w", w.path, err)
		}
	}
	f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return fmt.Errorf("rotate log %s: %w", w.path, err)
	}
	w.f, w.size = f, 0
	return nil
}

// Close closes the live file.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.f == nil {
		return nil
	}
	err := w.f.Close()
	w.f = nil
	return err
}

// LineWriter turns a byte stream into records of one stream: complete
// lines become F records, long lines are split, and Flush writes what is
// left as a P record (output that ended without a newline).
type LineWriter struct {
	W      *Writer
	Stream Stream
	buf    []byte
}

// Write records every complete line in p and keeps the rest. Lines are
// written from p itself; only an unterminated tail is copied, into a
// buffer that is reused.
func (l *LineWriter) Write(p []byte) (int, error) {
	n := len(p)
	if len(l.buf) > 0 {
		// Complete the pending line first.
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.buf = append(l.buf, p...)
			return n, l.spill()
		}
		l.buf = append(l.buf, p[:i]...)
		err := l.emit(l.buf, false)
		l.buf = l.buf[:0]
		if err != nil {
			return n, err
		}
		p = p[i+1:]
	}
	for {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			break
		}
		if err := l.emit(p[:i], false); err != nil {
			return n, err
		}
		p = p[i+1:]
	}
	l.buf = append(l.buf, p...)
	return n, l.spill()
}

// spill writes the pending tail as P records while it is a whole record
// long or more, and keeps the buffer from pinning a large backing array.
func (l *LineWriter) spill() error {
	var err error
	rest := l.buf
	for len(rest) >= MaxLine && err == nil {
		err = l.W.WriteRecord(l.Stream, rest[:MaxLine], true)
		rest = rest[MaxLine:]
	}
	l.buf = append(l.buf[:0], rest...)
	if cap(l.buf) > 2*MaxLine {
		l.buf = append([]byte(nil), l.buf...)
	}
	return err
}

func (l *LineWriter) emit(line []byte, partial bool) error {
	for len(line) > MaxLine {
		if err := l.W.WriteRecord(l.Stream, line[:MaxLine], true); err != nil {
			return err
		}
		line = line[MaxLine:]
	}
	return l.W.WriteRecord(l.Stream, line, partial)
}

// Pending returns the start of a line not yet written (no newline seen).
func (l *LineWriter) Pending() []byte { return l.buf }

// Flush writes a pending unterminated line as a P record.
func (l *LineWriter) Flush() error {
	if len(l.buf) == 0 {
		return nil
	}
	err := l.emit(l.buf, true)
	l.buf = nil
	return err
}

// Record is one parsed line of the file.
type Record struct {
	Time    time.Time
	Stream  Stream
	Partial bool
	Content []byte
}

// Parse parses one line (without its newline).
func Parse(line []byte) (Record, error) {
	var r Record
	ts, rest, ok := bytes.Cut(line, []byte{' '})
	if !ok {
		return r, fmt.Errorf("log line without stream: %q", truncate(line))
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return r, fmt.Errorf("log line with a bad time: %q", truncate(line))
	}
	stream, rest, ok := bytes.Cut(rest, []byte{' '})
	if !ok || (string(stream) != string(Stdout) && string(stream) != string(Stderr)) {
		return r, fmt.Errorf("log line with a bad stream: %q", truncate(line))
	}
	tag, content, ok := bytes.Cut(rest, []byte{' '})
	if !ok || (string(tag) != "F" && string(tag) != "P") {
		return r, fmt.Errorf("log line with a bad tag: %q", truncate(line))
	}
	return Record{Time: t, Stream: Stream(stream), Partial: string(tag) == "P", Content: content}, nil
}

func truncate(b []byte) []byte {
	if len(b) > 80 {
		return b[:80]
	}
	return b
}

// Files lists the log's files oldest first: <path>.N … <path>.1, <path>.
// Missing rotated files are skipped.
func Files(path string, maxFiles int) []string {
	var out []string
	for i := maxFiles; i >= 1; i-- {
		p := path + "." + strconv.Itoa(i)
		if _, err := os.Stat(p); err == nil {
			out = append(out, p)
		}
	}
	return append(out, path)
}

// ReadAll calls fn for each record in r; malformed lines are skipped.
// It returns the number of bytes consumed, which stops before a final
// line without its newline (a record being written), so a follower can
// resume there.
func ReadAll(r io.Reader, fn func(Record) error) (int64, error) {
	br := bufio.NewReaderSize(r, 64*1024)
	var off int64
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// Longer than any record we write: skip it whole.
			n := int64(len(line))
			for errors.Is(err, bufio.ErrBufferFull) {
				line, err = br.ReadSlice('\n')
				n += int64(len(line))
			}
			if err != nil {
				return off, nil
			}
			off += n
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return off, nil
			}
			return off, err
		}
		off += int64(len(line))
		rec, perr := Parse(line[:len(line)-1])
		if perr != nil {
			continue
		}
		rec.Content = append([]byte(nil), rec.Content...)
		if err := fn(rec); err != nil {
			return off, err
		}
	}
}
