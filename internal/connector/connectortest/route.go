package connectortest

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/popconnector/popconnector/internal/connector"
	"github.com/popconnector/popconnector/internal/route"
)

// SingleRoute is one route, to addr ("host:port"), for every recipient,
// whose connections dial opens: the set-up of a test that has one SMTP
// server. The route's host names the Remote-MTA of notices.
func SingleRoute(addr string, dial connector.RelayDialer) (*route.Table, connector.RouteDialer, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("connectortest: route to %q: %w", addr, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return nil, nil, fmt.Errorf("connectortest: route to %q: %w", addr, err)
	}
	table, err := route.New([]route.Route{{Name: "delivery", Host: host, Port: p}})
	if err != nil {
		return nil, nil, err
	}
	return table, func(ctx context.Context, _ route.Route) (connector.Relay, error) { return dial(ctx) }, nil
}
