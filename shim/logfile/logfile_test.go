package logfile

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readRecords(t *testing.T, path string, maxFiles int) []Record {
	t.Helper()
	var out []Record
	for _, p := range Files(path, maxFiles) {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ReadAll(f, func(r Record) error { out = append(out, r); return nil }); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	return out
}

func TestLongLinesSplitIntoPartials(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	w, err := Open(path, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	lw := &LineWriter{W: w, Stream: Stdout}
	long := strings.Repeat("x", MaxLine*2+10)
	lw.Write([]byte("short\n" + long[:100]))
	lw.Write([]byte(long[100:] + "\ntail-without-newline"))
	lw.Flush()
	w.Close()
	recs := readRecords(t, path, 1)
	var tags []string
	var joined bytes.Buffer
	for _, r := range recs {
		tags = append(tags, map[bool]string{true: "P", false: "F"}[r.Partial])
		if r.Stream != Stdout {
			t.Errorf("stream %q", r.Stream)
		}
	}
	if got := strings.Join(tags, ""); got != "FPPFP" {
		t.Fatalf("tags %s, want FPPFP", got)
	}
	for _, r := range recs[1:4] {
		joined.Write(r.Content)
	}
	if joined.String() != long {
		t.Errorf("long line not reassembled: %d bytes", joined.Len())
	}
	if string(recs[4].Content) != "tail-without-newline" {
		t.Errorf("last %q", recs[4].Content)
	}
}

func TestRotationKeepsMaxFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	w, err := Open(path, 200, 3)
	if err != nil {
		t.Fatal(err)
	}
	lw := &LineWriter{W: w, Stream: Stderr}
	for i := 0; i < 50; i++ {
		lw.Write([]byte("line of output number xx\n"))
	}
	w.Close()
	if _, err := os.Stat(path + ".3"); err == nil {
		t.Errorf("%s.3 kept with max files 3", path)
	}
	for _, p := range []string{path, path + ".1", path + ".2"} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Size() > 200 {
			t.Errorf("%s is %d bytes, over max size 200", p, fi.Size())
		}
	}
	recs := readRecords(t, path, 3)
	if len(recs) == 0 || len(recs) >= 50 {
		t.Errorf("%d records after rotation", len(recs))
	}
	for i := 1; i < len(recs); i++ {
		if recs[i].Time.Before(recs[i-1].Time) {
			t.Fatalf("records out of order across files")
		}
	}
}

// Output that keeps coming costs the writer no allocation once warm: the
// shim relies on it to run without a garbage collector (see berth-shim).
// Lines split across writes still come out whole.
func TestSteadyOutputAllocatesNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.log")
	w, err := Open(path, 0, 1)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	lw := &LineWriter{W: w, Stream: Stdout}
	chunks := [][]byte{[]byte("GET /index.html 200\nGET /st"), []byte("yle.css 200\nGET /a"), []byte("pp.js 304\n")}
	write := func() {
		for _, c := range chunks {
			lw.Write(c)
		}
	}
	write() // warm: the buffers reach their size (AllocsPerRun warms once more)
	if n := testing.AllocsPerRun(100, write); n != 0 {
		t.Fatalf("%v allocations per round of output, want 0", n)
	}
	w.Close()
	recs := readRecords(t, path, 1)
	if len(recs) != 3*102 || string(recs[1].Content) != "GET /style.css 200" || string(recs[2].Content) != "GET /app.js 304" {
		t.Fatalf("%d records, second %q, third %q", len(recs), recs[1].Content, recs[2].Content)
	}
}
