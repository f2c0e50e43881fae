// NflogSource: the edge between the kernel's nfnetlink_log and the pure NflogStream.
//
// One NETLINK_NETFILTER socket (libmnl) in the caller's network namespace, non-blocking, for
// an external poll loop. open() binds every configured group and sets, per group, in one
// acknowledged config message:
//   copy mode NFULNL_COPY_PACKET with a copy range covering L3 + L4 headers only (128 bytes),
//   NFULA_CFG_QTHRESH and NFULA_CFG_TIMEOUT explicitly (the kernel defaults batch up to 100
//   packets or 1 s), NFULA_CFG_NLBUFSIZ, and NFULNL_CFG_F_SEQ | NFULNL_CFG_F_SEQ_GLOBAL so
//   every message carries its sequence numbers (loss detection, see nflog_stream.hpp).
// The socket receive buffer is set with SO_RCVBUFFORCE (falling back to SO_RCVBUF); when
// the kernel reports ENOBUFS (it dropped a datagram because the buffer was full) the loss
// is counted, the buffer doubles up to a cap, and the exact number of lost events shows up
// as a sequence gap when the group's next message arrives.
//
// No PF_BIND/PF_UNBIND: they are obsolete for nft's `log group` (the logger is found by
// type) and not harmless: PF_BIND makes nfnetlink_log the namespace's default logger for
// every other user of nf_log, PF_UNBIND removes whatever another program bound.
#pragma once

#include "enforcer/nflog/delivery_pacer.hpp"
#include "enforcer/nflog/drop_event.hpp"
#include "enforcer/nflog/nflog_stream.hpp"

#include <cstdint>
#include <expected>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace bulkhead::nflog {

struct NflogSourceConfig {
    std::vector<std::uint16_t> groups{10, 11};  // drops, allowed new connections
    std::uint32_t copy_range = 128;             // IPv6 40 + some extensions + TCP 20+
    // Batched delivery (floods): messages per datagram before the kernel flushes, and its
    // flush timer (1/100 s; 0 = the next timer tick, 1-4 ms).
    std::uint32_t queue_threshold = 64;
    std::uint32_t flush_timeout_cs = 0;
    // Immediate delivery (qthreshold 1) while the drop rate is low, batched under floods
    // (delivery_pacer.hpp). false: always batched.
    bool adaptive_delivery = true;
    DeliveryPacerConfig pacing;
    std::uint32_t kernel_buffer_bytes = 65'536; // NFULA_CFG_NLBUFSIZ (kernel range 3776..131072)
    int rcvbuf_bytes = 8 << 20;                 // socket receive buffer
    int rcvbuf_max_bytes = 64 << 20;            // ENOBUFS doubles the buffer up to this
    std::size_t max_datagrams_per_read = 256;   // read_available() budget (fairness)
    int config_timeout_ms = 2000;               // waiting for the kernel's ACKs in open()
};

// ifindex -> name through SIOCGIFNAME on a socket of the source's network namespace, cached.
// A miss asks the kernel (a recreated port has a new ifindex); invalidate() forgets every
// name (renames keep the ifindex: call it when the ruleset's ports change).
class KernelInterfaceNames final : public InterfaceNames {
  public:
    KernelInterfaceNames();
    ~KernelInterfaceNames() override;
    KernelInterfaceNames(const KernelInterfaceNames&) = delete;
    KernelInterfaceNames& operator=(const KernelInterfaceNames&) = delete;

    bool name_of(std::uint32_t ifindex, std::string& name) override;
    void invalidate() { cache_.clear(); }
    std::uint64_t kernel_lookups() const { return kernel_lookups_; }

  private:
    int fd_ = -1;
    std::unordered_map<std::uint32_t, std::string> cache_;
    std::uint64_t kernel_lookups_ = 0;
};

class NflogSource {
  public:
    // Opens the socket and binds every group. Fails (with a message naming the group and the
    // kernel's error) if a group is bound by another socket or the kernel has no
    // nfnetlink_log.
    static std::expected<NflogSource, std::string> open(const NflogSourceConfig& config);

    NflogSource(NflogSource&&) noexcept;
    NflogSource& operator=(NflogSource&&) noexcept;
    ~NflogSource();

    int fd() const; // poll for POLLIN

    struct ReadResult {
        std::size_t datagrams = 0;
        std::size_t events = 0;
        bool more_pending = false; // the budget ran out before the socket was empty
    };
    // Reads until the socket is empty or the budget is spent; decodes every message of every
    // datagram and calls `on_event` for each event (the reference is valid during the call).
    // Errors are unexpected socket errors only; ENOBUFS is counted, not an error.
    std::expected<ReadResult, std::string>
    read_available(const NflogStream::EventCallback& on_event);

    // An idle moment (the caller's timer): lets the delivery go back to immediate after a
    // flood even when nothing more arrives.
    void pace(std::int64_t now_unix_ns);
    DeliveryMode delivery_mode() const;
    std::uint64_t delivery_switches() const;

    const NflogCounters& counters() const;
    int rcvbuf_bytes() const; // as the kernel reports it (twice the requested size)
    void invalidate_interface_names();
    const NflogSourceConfig& config() const;

  private:
    struct Impl;
    explicit NflogSource(std::unique_ptr<Impl> impl);
    std::unique_ptr<Impl> impl_;
};

} // namespace bulkhead::nflog
