package follow

import (
	"testing"

	"github.com/jackc/pglogrepl"
)

func TestConfirmerWithoutAcksConfirmsOnFlush(t *testing.T) {
	var got []pglogrepl.LSN
	c := newConfirmer(false, func(l pglogrepl.LSN) { got = append(got, l) })
	c.flushed(100, 110)
	c.flushed(0, 120)
	if len(got) != 2 || got[0] != 110 || got[1] != 120 {
		t.Fatalf("confirmed %v, want [110 120]", got)
	}
}

func TestConfirmerWithAcksWaitsForTheReader(t *testing.T) {
	var got []pglogrepl.LSN
	c := newConfirmer(true, func(l pglogrepl.LSN) { got = append(got, l) })
	c.flushed(100, 110) // lines up to lsn 100
	c.flushed(200, 210) // lines up to lsn 200
	c.flushed(0, 220)   // a group that wrote nothing
	if len(got) != 0 {
		t.Fatalf("confirmed %v before any ack", got)
	}
	c.ack(99)
	if len(got) != 0 {
		t.Fatalf("ack 99 confirmed %v; the group's lines go up to 100", got)
	}
	c.ack(100)
	if len(got) != 1 || got[0] != 110 {
		t.Fatalf("ack 100 confirmed %v, want [110]", got)
	}
	c.ack(150) // not enough for the second group
	if len(got) != 1 || c.waiting() != 2 {
		t.Fatalf("ack 150 confirmed %v (waiting %d)", got, c.waiting())
	}
	c.ack(200) // the second group, and the empty one behind it
	if len(got) != 2 || got[1] != 220 || c.waiting() != 0 {
		t.Fatalf("ack 200 confirmed %v, want [110 220]", got)
	}
	c.ack(50) // an older ack never moves anything back
	c.flushed(0, 230)
	if got[len(got)-1] != 230 {
		t.Fatalf("empty group after all acks not confirmed: %v", got)
	}
}
