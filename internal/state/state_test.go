package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSaveLoadRoundTrip(t *testing.T) {
	s := New(filepath.Join(t.TempDir(), "nested"), "slot_a")
	var got Identity
	if ok, err := s.Load(IdentityRecord, &got); ok || err != nil {
		t.Fatalf("missing record: ok=%v err=%v", ok, err)
	}
	want := Identity{SystemID: "7301", Timeline: 1, Database: "app", Slot: "slot_a", ConsistentPoint: 0x16B3748}
	if err := s.Save(IdentityRecord, want); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Load(IdentityRecord, &got); !ok || err != nil {
		t.Fatalf("load: ok=%v err=%v", ok, err)
	}
	if got != want {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	if err := s.Remove(IdentityRecord); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.Load(IdentityRecord, &got); ok {
		t.Fatal("record still there after Remove")
	}
}

func TestDamagedRecordSaysWhatToDo(t *testing.T) {
	dir := t.TempDir()
	s := New(dir, "x")
	os.WriteFile(filepath.Join(dir, "x.identity.json"), []byte("{not json"), 0o644)
	var id Identity
	_, err := s.Load(IdentityRecord, &id)
	if err == nil || !strings.Contains(err.Error(), "--resync") {
		t.Fatalf("err = %v, want a message naming --resync", err)
	}
}
