// The transport under NetlinkRulesetBackend: a NETLINK_NETFILTER socket, one sendmsg()
// per batch, every ACK read, generation ids and dumps. Internal to bulkhead_nft.
#pragma once

#include "enforcer/netlink/ruleset_backend.hpp"

#include <cstdint>
#include <expected>
#include <functional>
#include <optional>
#include <string>
#include <vector>

struct mnl_socket;
struct nlmsghdr;

namespace bulkhead::enforcer::detail {

struct AckError {
    std::uint32_t seq = 0;
    int error_number = 0;     // positive errno
    std::uint32_t offset = 0; // NLMSGERR_ATTR_OFFS: the offending attribute in the message
    std::string extack;       // NLMSGERR_ATTR_MSG
};

struct BatchOutcome {
    std::size_t expected_acks = 0;
    std::size_t acks = 0;          // distinct acknowledged messages
    std::vector<AckError> errors;  // per-message errors, and commit errors (on the begin seq)
    bool enobufs = false;          // the socket dropped messages: some ACKs are lost
    bool complete() const { return !enobufs && acks == expected_acks; }
};

// The outcome of one transaction of a pipelined element-change batch.
struct TransactionOutcome {
    bool sent = false;
    std::size_t expected_acks = 0;
    std::size_t acks = 0;
    std::vector<AckError> errors;  // element errors, and commit errors (on the begin seq)
};

struct PipelineOutcome {
    std::vector<TransactionOutcome> transactions;  // parallel to the ElementTransactions
    bool enobufs = false;         // ACKs (or errors) were dropped by the socket
    std::size_t send_calls = 0;   // sendmmsg() calls
    std::optional<KernelError> transport_error;  // sending stopped here (rest not sent)
};

class NetlinkSocket {
public:
    static std::expected<NetlinkSocket, KernelError> open();
    ~NetlinkSocket();
    NetlinkSocket(NetlinkSocket&& other) noexcept;
    NetlinkSocket& operator=(NetlinkSocket&&) = delete;
    NetlinkSocket(const NetlinkSocket&) = delete;
    NetlinkSocket& operator=(const NetlinkSocket&) = delete;

    // Sends the whole batch with one sendmsg() over an iovec of its pages (raising
    // SO_SNDBUF with SO_SNDBUFFORCE as needed) and reads every ACK.
    std::expected<BatchOutcome, KernelError> send_batch(const Batch& batch,
                                                        std::size_t receive_buffer);

    // The transactions of `batch`, each its own datagram, `window` per sendmmsg(); the
    // ACKs of a window are read before the next one is sent (nfnetlink handles each
    // datagram synchronously inside the call, so they are all queued by then).
    // `receive_buffer` as in NetlinkOptions (0: sized for a window's ACKs).
    PipelineOutcome send_transactions(const Batch& batch,
                                      const std::vector<ElementTransaction>& transactions,
                                      std::size_t window, std::size_t receive_buffer = 0);

    std::expected<std::uint32_t, KernelError> generation(std::uint32_t seq);

    // Discards whatever an earlier exchange left unread (late ACKs after a lost-ACK case),
    // so that a socket kept across calls starts every exchange clean.
    void drain();

    // A request (GET* with NLM_F_DUMP, or a plain GET) and its replies until NLMSG_DONE or
    // the answer. An interrupted dump (the ruleset changed under it) fails with EINTR.
    std::expected<void, KernelError> request(
        const nlmsghdr* request, const std::function<void(const nlmsghdr*)>& on_message);

private:
    explicit NetlinkSocket(mnl_socket* socket) : socket_(socket) {}
    mnl_socket* socket_;
};

}  // namespace bulkhead::enforcer::detail
