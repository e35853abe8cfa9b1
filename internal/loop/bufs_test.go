package loop

import "testing"

func TestSpares(t *testing.T) {
	s := Spares[*int]{Max: 2}
	if _, ok := s.Get(); ok {
		t.Fatal("an empty list gave a spare")
	}
	a, b, c := new(int), new(int), new(int)
	if !s.Put(a) || !s.Put(b) || s.Put(c) {
		t.Fatal("Put: want the first two kept, the third refused (Max 2)")
	}
	if s.Len() != 2 {
		t.Fatalf("Len %d, want 2", s.Len())
	}
	if v, ok := s.Get(); !ok || v != b {
		t.Fatal("Get: want the last one given back first")
	}
	if v, ok := s.Get(); !ok || v != a {
		t.Fatal("Get: want the first one next")
	}
	if _, ok := s.Get(); ok || s.Len() != 0 {
		t.Fatal("want the list empty")
	}
	var d Spares[int]
	for i := range 300 {
		if kept := d.Put(i); kept != (i < 256) {
			t.Fatalf("Put %d: kept %v; the default Max is 256", i, kept)
		}
	}
}
