// Command golibvirt_probe drives a libvirt daemon through the pure-Go
// go-libvirt client, the way Terraform's libvirt provider and Prometheus
// exporters do, and prints one line per answer for tests/go_libvirt.rs.
//
// Usage: golibvirt_probe SOCKET DOMAIN
package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: golibvirt_probe SOCKET DOMAIN")
		os.Exit(2)
	}
	if err := run(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func run(socket, name string) error {
	l := libvirt.NewWithDialer(dialers.NewLocal(
		dialers.WithSocket(socket),
		dialers.WithLocalTimeout(10*time.Second),
	))
	// AUTH_LIST, then CONNECT_OPEN with go-libvirt's hand-made args.
	if err := l.ConnectToURI(libvirt.QEMUSystem); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	version, err := l.Version()
	if err != nil {
		return fmt.Errorf("version: %w", err)
	}
	fmt.Println("version", version)
	hvType, err := l.ConnectGetType()
	if err != nil {
		return fmt.Errorf("type: %w", err)
	}
	fmt.Println("type", hvType)
	uri, err := l.ConnectGetUri()
	if err != nil {
		return fmt.Errorf("uri: %w", err)
	}
	fmt.Println("uri", uri)

	domains, err := l.Domains()
	if err != nil {
		return fmt.Errorf("domains: %w", err)
	}
	names := make([]string, 0, len(domains))
	for _, d := range domains {
		names = append(names, d.Name)
	}
	sort.Strings(names)
	fmt.Println("domains", strings.Join(names, " "))

	dom, err := l.DomainLookupByName(name)
	if err != nil {
		return fmt.Errorf("lookup: %w", err)
	}
	fmt.Println("lookup", dom.Name, dom.ID)
	state, reason, err := l.DomainGetState(dom, 0)
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	fmt.Println("state", state, reason)
	infoState, maxMem, _, vcpus, _, err := l.DomainGetInfo(dom)
	if err != nil {
		return fmt.Errorf("info: %w", err)
	}
	fmt.Println("info", infoState, maxMem, vcpus)
	xml, err := l.DomainGetXMLDesc(dom, 0)
	if err != nil {
		return fmt.Errorf("xml: %w", err)
	}
	fmt.Println("xml names domain", strings.Contains(xml, "<name>"+name+"</name>"))
	checkpoints, count, err := l.DomainListAllCheckpoints(dom, 1, 0)
	if err != nil {
		return fmt.Errorf("checkpoints: %w", err)
	}
	fmt.Println("checkpoints", len(checkpoints), count)

	// Refusals come back as errors that go-libvirt decodes.
	if _, err := l.DomainLookupByName(name + "-missing"); err != nil {
		fmt.Println("missing:", err)
	}
	// The optional checkpoint XML travels as go-libvirt's OptString.
	backupXML := "<domainbackup/>"
	if err := l.DomainBackupBegin(dom, backupXML, libvirt.OptString{"<domaincheckpoint/>"}, 0); err != nil {
		fmt.Println("backup:", err)
	}

	if err := l.Disconnect(); err != nil {
		return fmt.Errorf("disconnect: %w", err)
	}
	fmt.Println("disconnected")
	return nil
}
