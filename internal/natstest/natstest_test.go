package natstest

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestClusterSurvivesAKilledNode starts three nodes, creates an R3 stream,
// kills one node, publishes, restarts it, and reads every message back.
func TestClusterSurvivesAKilledNode(t *testing.T) {
	c := StartCluster(t, 3, Options{})
	nc, err := nats.Connect(c.URLs())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var s jetstream.Stream
	for {
		s, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s.>"}, Replicas: 3})
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("create an R3 stream: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.Servers[2].Kill(t)
	for i := 0; i < 10; i++ {
		for {
			// Each attempt has its own deadline: a publish sent on the
			// connection to the killed node, before the client has seen it
			// go, gets no ack and would otherwise wait out the whole test's.
			actx, acancel := context.WithTimeout(ctx, 2*time.Second)
			// (The message ID: a publish stored but whose ack was lost is
			// not stored twice when sent again.)
			_, err = js.Publish(actx, "s.a", []byte{byte(i)}, jetstream.WithMsgID(strconv.Itoa(i)))
			acancel()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("publish %d with a node down: %v", i, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	c.Servers[2].Restart(t)
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 10 {
		t.Fatalf("the stream holds %d messages, want 10", info.State.Msgs)
	}
}

func TestSingleServerWithToken(t *testing.T) {
	s := Start(t, Options{Token: "s3cret"})
	if nc, err := nats.Connect(s.URL()); err == nil {
		nc.Close()
		t.Fatal("connected without the token")
	}
	nc, err := nats.Connect(s.URL(), nats.Token("s3cret"))
	if err != nil {
		t.Fatalf("connect with the token: %v", err)
	}
	nc.Close()
}
