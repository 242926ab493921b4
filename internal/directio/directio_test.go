package directio

import "testing"

func TestBufIsAligned(t *testing.T) {
	for _, n := range []int{1, 4095, 4096, 1 << 20} {
		b := Buf(n)
		if len(b) != n || cap(b) != n || !Aligned(b) {
			t.Fatalf("Buf(%d): len %d cap %d aligned %v", n, len(b), cap(b), Aligned(b))
		}
	}
}
