package gateway

// Liveness: the gateway learns that the worker holding a request is gone
// from the NATS server itself. A worker takes each request on a control
// subject of its connection (wire.KindAccept, or the reply subject of its
// first chunk) that stays subscribed as long as the connection lives. The
// gateway probes that subject with the request's inbox as reply subject
// (wire.StreamReceiver.Probe): while the worker is connected the probe is
// ignored; once its connection is gone (killed, crashed, cut off) the
// server bounces the probe to the inbox as "no responders".
//
// Before the first byte of an answer (await, every DispatchProbe) a bounce
// re-dispatches the request once to another worker; after it (relay.run,
// when a stream heard nothing for StreamProbe) the stream ends with a
// worker_gone error event. Without this a request whose worker was killed
// would wait for its deadline.
