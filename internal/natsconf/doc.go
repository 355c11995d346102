// Package natsconf writes the nats-server configuration of an external
// teegate cluster: per node, JetStream, the route mesh, the workers'
// account with the services' nkey users, the system account, and the auth
// callout that sends every other connection (workers, which present only
// their evidence) to the gateways' admission service. It is the external
// counterpart of internal/natsembed's accounts; `teegate nats-config`
// writes it out with fresh keys.
package natsconf
