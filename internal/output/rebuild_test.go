package output

import "testing"

// The rebuild lines are exactly SPEC's.
func TestRebuildLines(t *testing.T) {
	if got, want := string(AppendRebuildStart(nil, "posts", 0x16B3800)), `{"index":"posts","op":"rebuild_start","lsn":"0/16B3800"}`+"\n"; got != want {
		t.Errorf("rebuild_start: %q, want %q", got, want)
	}
	if got, want := string(AppendRebuildDone([]byte("x"), `a"b`, 0x16B3800)), `x{"index":"a\"b","op":"rebuild_done","lsn":"0/16B3800"}`+"\n"; got != want {
		t.Errorf("rebuild_done: %q, want %q", got, want)
	}
}
