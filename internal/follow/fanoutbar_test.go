package follow

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// The fan-out bar counts on a terminal: a redraw per chunk at most five
// times a second, over itself, and a last line with a newline; nothing
// without a terminal.
func TestFanoutBar(t *testing.T) {
	var tty bytes.Buffer
	b := &fanoutBar{tty: &tty}
	t0 := time.Unix(1000, 0)
	b.begin(4242, t0)
	b.update(10000, t0.Add(100*time.Millisecond))
	b.update(20000, t0.Add(150*time.Millisecond)) // too soon: not drawn
	b.update(30000, t0.Add(400*time.Millisecond))
	b.end(35000, t0.Add(time.Second))
	draws := strings.Split(tty.String(), "\r\x1b[2K")[1:]
	want := []string{
		"fan-out of transaction 4242: 10,000 documents writing, 100,000 docs/s, 100ms",
		"fan-out of transaction 4242: 30,000 documents writing, 75,000 docs/s, 400ms",
		"fan-out of transaction 4242: 35,000 documents written, 35,000 docs/s, 1s\n",
	}
	if strings.Join(draws, "|") != strings.Join(want, "|") {
		t.Fatalf("drawn:\n%q\nwant:\n%q", draws, want)
	}
	// Once ended, nothing more until the next fan-out begins.
	b.update(40000, t0.Add(2*time.Second))
	b.end(40000, t0.Add(2*time.Second))
	if n := strings.Count(tty.String(), "\r"); n != 3 {
		t.Fatalf("%d draws after the end, want 3", n)
	}

	// Not a terminal (a file, a pipe): no bar.
	none := newFanoutBar(&bytes.Buffer{})
	none.begin(1, t0)
	none.update(10000, t0.Add(time.Second))
	none.end(10000, t0.Add(time.Second))
	if none.tty != nil || none.on {
		t.Fatal("a bar drawn without a terminal")
	}
	var nilBar *fanoutBar
	nilBar.begin(1, t0) // a Follower made without New
	nilBar.update(1, t0)
	nilBar.end(1, t0)
}
