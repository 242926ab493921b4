package agent

import "testing"

func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestRemovalsWatch: a waiter for a --rm container wakes when a removal
// begins, and then when that removal has deleted the record, or ended
// without deleting it; never on another container's record.
func TestRemovalsWatch(t *testing.T) {
	var r removals
	gone, began := r.watch("default", "a")
	if gone != nil || began == nil || closed(began) {
		t.Fatalf("before any removal: gone %v, began %v (closed %v)", gone, began, began != nil && closed(began))
	}
	rmB, endB := r.begin("default", "b")
	if !closed(began) {
		t.Fatal("a removal began, and the watcher's began is still open")
	}
	if g, _ := r.watch("default", "a"); g != nil {
		t.Error("another container's removal is reported for a")
	}
	rmA, endA := r.begin("default", "a")
	gone, began = r.watch("default", "a")
	if gone == nil || closed(gone) || closed(began) {
		t.Fatalf("a's removal under way: gone %v (closed %v), began closed %v", gone, gone != nil && closed(gone), closed(began))
	}
	rmB.recordGone()
	if closed(gone) {
		t.Error("b's record going woke a's waiter")
	}
	rmA.recordGone()
	if !closed(gone) {
		t.Error("a's record is gone, and its waiter is not woken")
	}
	endA()
	endB()
	if g, _ := r.watch("default", "a"); g != nil {
		t.Error("a's removal ended, and it is still reported under way")
	}
	// A removal that ends without deleting the record wakes its waiter too.
	_, endC := r.begin("default", "c")
	gone, _ = r.watch("default", "c")
	endC()
	if !closed(gone) {
		t.Error("a removal that ended without deleting the record left its waiter asleep")
	}
}
