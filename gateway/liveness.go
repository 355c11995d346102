package gateway

import (
	"strconv"

	"github.com/nats-io/nats.go"

	"github.com/teegate/teegate/worker/wire"
)

// probe checks that an idle stream's worker is still there: it repeats the
// last ack (which the worker ignores) to the stream's ack subject with the
// stream's own inbox as reply subject. When nothing subscribes there any
// more (the worker died or lost its connection, and no chunk will ever
// come) the NATS server bounces the probe to the inbox as "no responders",
// and handle ends the stream with a worker_gone error event. Without this a
// stream whose worker was killed would stay open, sending keep-alives,
// until the request deadline.
func (r *relay) probe() {
	if r.control == "" {
		return
	}
	m := nats.NewMsg(r.control)
	m.Reply = r.sub.Subject
	m.Header.Set(wire.HdrAck, strconv.Itoa(r.acked))
	_ = r.nc.PublishMsg(m)
}
