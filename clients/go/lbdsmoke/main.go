// lbdsmoke drives lbd's lb.v1 API from Go with the stubs generated from
// proto/lb.proto: it follows the events, creates a VIP, adds backends, reads
// the VIP, the stats and the health service, prints what it saw, and exits
// non-zero with the reason on the first failure. It connects to lbd's Unix
// socket, or with -addr to its TCP listener over mutual TLS (-ca: the CA
// that signed lbd's certificate; -cert, -key: a client certificate of the
// CA lbd's --tls-client-ca names).
//
//	lbdsmoke [-socket /run/lbd.sock] [-vip 198.51.100.60] [-port 443]
//	lbdsmoke -addr 127.0.0.1:50051 -ca ca.pem -cert client.pem -key client.key
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io/ioutil"
	"net"
	"os"
	"time"

	lbv1 "lbd/proto/lb/v1"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "lbdsmoke: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	socket := flag.String("socket", "/run/lbd.sock", "lbd's API socket")
	address := flag.String("vip", "198.51.100.60", "the VIP's address")
	port := flag.Uint("port", 443, "the VIP's port")
	addr := flag.String("addr", "", "lbd's TLS listener (host:port, lbd --grpc-listen) instead of the socket")
	ca := flag.String("ca", "", "with -addr: the CA certificate (PEM) that signed lbd's certificate")
	cert := flag.String("cert", "", "with -addr: the client certificate (PEM)")
	key := flag.String("key", "", "with -addr: the client certificate's key (PEM)")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var conn *grpc.ClientConn
	var err error
	if *addr != "" {
		creds, err := tlsCredentials(*ca, *cert, *key)
		if err != nil {
			fail("%v", err)
		}
		// The server name checked against lbd's certificate is -addr's
		// host (an IP address matches an IP subjectAltName).
		conn, err = grpc.DialContext(ctx, *addr, grpc.WithTransportCredentials(creds), grpc.WithBlock())
		if err != nil {
			fail("connecting to %s over TLS: %v", *addr, err)
		}
	} else {
		// grpc-go sends "localhost" as the authority of a Unix socket: no
		// option needed (unlike grpcio).
		conn, err = grpc.DialContext(ctx, "unix:"+*socket, grpc.WithInsecure(), grpc.WithBlock(),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", *socket)
			}))
		if err != nil {
			fail("connecting to %s: %v", *socket, err)
		}
	}
	defer conn.Close()
	lb := lbv1.NewLoadBalancerClient(conn)

	info, err := lb.GetInfo(ctx, &lbv1.Empty{})
	if err != nil {
		fail("GetInfo: %v", err)
	}
	fmt.Printf("info: port %s workers %v generation %d\n", info.Port, info.WorkerLcores, info.SnapshotGeneration)

	events, err := lb.Watch(ctx, &lbv1.Empty{})
	if err != nil {
		fail("Watch: %v", err)
	}
	// The headers come once lbd has subscribed the stream.
	if _, err := events.Header(); err != nil {
		fail("Watch headers: %v", err)
	}

	vip := &lbv1.VipKey{Address: *address, Port: uint32(*port), Protocol: lbv1.Protocol_TCP}
	v, err := lb.CreateVip(ctx, &lbv1.CreateVipRequest{Vip: vip})
	if err != nil {
		fail("CreateVip: %v", err)
	}
	fmt.Printf("vip: %s:%d table %d\n", v.Key.Address, v.Key.Port, v.TableSize)
	weight := uint32(2)
	for _, b := range []*lbv1.AddBackendRequest{
		{Vip: vip, Address: "192.0.2.61", Mac: "02:00:00:00:00:61"},
		{Vip: vip, Address: "192.0.2.62", Weight: &weight},
	} {
		r, err := lb.AddBackend(ctx, b)
		if err != nil {
			fail("AddBackend %s: %v", b.Address, err)
		}
		fmt.Printf("backend: %s weight %d state %s mac %q\n", r.Address, r.Weight, r.State, r.EffectiveMac)
	}
	_, err = lb.AddBackend(ctx, &lbv1.AddBackendRequest{Vip: vip, Address: "192.0.2.63", Weight: new(uint32)})
	if err != nil {
		fail("AddBackend weight 0: %v", err)
	}
	bad := uint32(10001)
	_, err = lb.AddBackend(ctx, &lbv1.AddBackendRequest{Vip: vip, Address: "192.0.2.64", Weight: &bad})
	if status.Code(err) != codes.InvalidArgument {
		fail("AddBackend weight 10001: %v, expected InvalidArgument", err)
	}
	fmt.Printf("refused: %s: %s\n", status.Code(err), status.Convert(err).Message())

	// The four changes above, in order.
	for seen := 0; seen < 4; {
		e, err := events.Recv()
		if err != nil {
			fail("Watch: %v", err)
		}
		if c := e.GetConfig(); c != nil {
			fmt.Printf("event: %s (generation %d)\n", c.What, c.Generation)
			seen++
		}
	}

	got, err := lb.GetVip(ctx, vip)
	if err != nil {
		fail("GetVip: %v", err)
	}
	fmt.Printf("get: %d backends\n", len(got.Backends))
	stats, err := lb.GetStats(ctx, &lbv1.Empty{})
	if err != nil {
		fail("GetStats: %v", err)
	}
	for _, w := range stats.Workers {
		fmt.Printf("worker %d: rx %d\n", w.Lcore, w.RxPackets)
	}
	for _, s := range stats.Vips {
		if s.Key.Address == *address {
			fmt.Printf("vip stats: %d backends, %d packets\n", len(s.Backends), s.Packets)
		}
	}
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "lb.v1.LoadBalancer"})
	if err != nil {
		fail("health: %v", err)
	}
	fmt.Printf("health: %s\n", h.Status)
}

// tlsCredentials: mutual TLS with lbd's TCP listener, trusting only the CA
// in caFile and presenting the client certificate certFile with keyFile.
func tlsCredentials(caFile, certFile, keyFile string) (credentials.TransportCredentials, error) {
	if caFile == "" || certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("-addr needs -ca, -cert and -key (lbd requires a client certificate)")
	}
	pem, err := ioutil.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("reading the CA: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", caFile)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("loading the client certificate: %v", err)
	}
	return credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{pair},
		RootCAs:      roots,
		MinVersion:   tls.VersionTLS12,
	}), nil
}
