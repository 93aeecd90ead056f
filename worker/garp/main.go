// garp sends one ARP announcement (RFC 5227: an ARP request whose sender and target address are
// both the announced address, to the broadcast MAC) for each address given, from the interface's
// own MAC, so that neighbours that cached another MAC for it learn this one. One process for a
// whole batch of addresses: arping costs a process (and a packet ring) per address.
//
// Usage: garp <interface> <IPv4 address>...
package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"syscall"
)

func main() {
	if len(os.Args) < 3 {
		fail("usage: garp <interface> <IPv4 address>...")
	}
	ifi, err := net.InterfaceByName(os.Args[1])
	if err != nil {
		fail(err.Error())
	}
	if len(ifi.HardwareAddr) != 6 {
		fail(fmt.Sprintf("%s has no Ethernet address", ifi.Name))
	}
	addresses := make([]net.IP, 0, len(os.Args)-2)
	for _, arg := range os.Args[2:] {
		ip := net.ParseIP(arg).To4()
		if ip == nil {
			fail(fmt.Sprintf("not an IPv4 address: %q", arg))
		}
		addresses = append(addresses, ip)
	}
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_RAW, int(htons(syscall.ETH_P_ARP)))
	if err != nil {
		fail("packet socket: " + err.Error())
	}
	defer syscall.Close(fd)
	to := &syscall.SockaddrLinklayer{Protocol: htons(syscall.ETH_P_ARP), Ifindex: ifi.Index, Halen: 6}
	copy(to.Addr[:], broadcast)
	for _, ip := range addresses {
		if err := syscall.Sendto(fd, announcement(ifi.HardwareAddr, ip), 0, to); err != nil {
			fail(fmt.Sprintf("announcing %s on %s: %v", ip, ifi.Name, err))
		}
	}
}

var broadcast = []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// announcement is the Ethernet frame of an ARP announcement of ip from mac.
func announcement(mac net.HardwareAddr, ip net.IP) []byte {
	frame := make([]byte, 0, 42)
	frame = append(frame, broadcast...)
	frame = append(frame, mac...)
	frame = binary.BigEndian.AppendUint16(frame, syscall.ETH_P_ARP)
	frame = binary.BigEndian.AppendUint16(frame, 1)                // hardware: Ethernet
	frame = binary.BigEndian.AppendUint16(frame, syscall.ETH_P_IP) // protocol: IPv4
	frame = append(frame, 6, 4)                                    // address lengths
	frame = binary.BigEndian.AppendUint16(frame, 1)                // request
	frame = append(frame, mac...)
	frame = append(frame, ip...)
	frame = append(frame, 0, 0, 0, 0, 0, 0) // target MAC: unknown
	return append(frame, ip...)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func fail(message string) {
	fmt.Fprintln(os.Stderr, "garp: "+message)
	os.Exit(1)
}
