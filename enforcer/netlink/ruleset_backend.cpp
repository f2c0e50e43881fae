#include "enforcer/netlink/ruleset_backend.hpp"

#include "enforcer/netlink/kernel_table.hpp"
#include "enforcer/netlink/netlink_io.hpp"
#include "policies/nft_text.hpp"

#include <linux/netlink.h>
#include <linux/netfilter/nfnetlink.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <functional>
#include <set>
#include <sstream>

namespace bulkhead::enforcer {

bool DriftReport::clean() const {
    return !table_missing && missing_sets.empty() && unexpected_sets.empty() &&
           changed_sets.empty() && missing_chains.empty() && unexpected_chains.empty() &&
           changed_chains.empty() && missing_elements == 0 && unexpected_elements == 0;
}

std::string DriftReport::summary() const {
    if (table_missing) {
        return "table inet bulkhead missing";
    }
    if (clean()) {
        return "clean";
    }
    std::ostringstream out;
    const char* sep = "";
    auto list = [&](const std::vector<std::string>& names, const char* what) {
        if (names.empty()) {
            return;
        }
        out << sep << names.size() << ' ' << what << " (";
        for (std::size_t i = 0; i < names.size(); ++i) {
            out << (i == 0 ? "" : ", ") << names[i];
        }
        out << ')';
        sep = "; ";
    };
    list(missing_sets, "missing sets");
    list(unexpected_sets, "unexpected sets");
    list(changed_sets, "changed sets");
    list(missing_chains, "missing chains");
    list(unexpected_chains, "unexpected chains");
    list(changed_chains, "changed chains");
    if (missing_elements != 0) {
        out << sep << missing_elements << " missing elements";
        sep = "; ";
    }
    if (unexpected_elements != 0) {
        out << sep << unexpected_elements << " unexpected elements";
    }
    return out.str();
}

std::size_t ElementChangesReport::failed() const {
    return static_cast<std::size_t>(
        std::count_if(results.begin(), results.end(), [](const auto& r) { return !r.ok(); }));
}

namespace {

using Clock = std::chrono::steady_clock;

ruleset::RulesetDiff one_change_diff(const ruleset::Ruleset& current, const ElementChange& change) {
    ruleset::RulesetDiff diff;
    diff.enforcer = current.enforcer;
    ruleset::ElementList one{change.element};
    if (change.kind == ElementChange::Kind::Add) {
        diff.set_changes.push_back({change.set, {}, std::move(one)});
    } else {
        diff.set_changes.push_back({change.set, std::move(one), {}});
    }
    return diff;
}

}  // namespace

// Serial reference: one apply_diff() per change.
ElementChangesReport RulesetBackend::apply_element_changes(std::span<const ElementChange> changes,
                                                           const ruleset::Ruleset& current,
                                                           ElementCommit /*mode*/) {
    const auto start = Clock::now();
    ElementChangesReport report;
    report.results.resize(changes.size());
    for (std::size_t i = 0; i < changes.size(); ++i) {
        auto applied = apply_diff(one_change_diff(current, changes[i]), current);
        report.results[i].transaction = report.transactions++;
        if (applied) {
            ++report.committed;
            report.generation = applied->generation;
            report.acks_incomplete = report.acks_incomplete || applied->acks_incomplete;
        } else {
            report.results[i].error = applied.error();
        }
    }
    report.send_calls = report.transactions;
    report.latency = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start);
    return report;
}

namespace {

// The first error of an aborted batch, named after the IR object its message carried.
KernelError describe_failure(const Batch& batch, const detail::BatchOutcome& outcome) {
    auto errors = outcome.errors;
    std::sort(errors.begin(), errors.end(),
              [](const auto& a, const auto& b) { return a.seq < b.seq; });
    const auto& first = errors.front();
    const BatchMessage* message = batch.find(first.seq);
    KernelError e;
    e.error_number = first.error_number;
    if (message != nullptr && message->type == NFNL_MSG_BATCH_BEGIN) {
        e.object = "batch";
        e.message = "the kernel could not commit the batch";
    } else {
        e.object = batch.object_at(first.seq, first.offset);
        e.message = "the kernel rejected " + (e.object.empty() ? std::string("a message") : e.object);
    }
    e.message += ": " + std::string(std::strerror(first.error_number));
    if (!first.extack.empty()) {
        e.message += " (" + first.extack + ")";
    }
    if (errors.size() > 1) {
        e.message += "; " + std::to_string(errors.size() - 1) + " more error(s) in the same batch";
    }
    e.message += "; nothing was committed";
    return e;
}

}  // namespace

NetlinkRulesetBackend::NetlinkRulesetBackend(NetlinkOptions options)
    : options_(options), next_seq_(static_cast<std::uint32_t>(std::time(nullptr))) {}

namespace {

std::expected<detail::NetlinkSocket*, KernelError> ensure_open(
    std::shared_ptr<detail::NetlinkSocket>& holder) {
    if (!holder) {
        auto opened = detail::NetlinkSocket::open();
        if (!opened) {
            return std::unexpected(opened.error());
        }
        holder = std::make_shared<detail::NetlinkSocket>(std::move(*opened));
    }
    return holder.get();
}

}  // namespace

std::expected<detail::NetlinkSocket*, KernelError> NetlinkRulesetBackend::socket() {
    return ensure_open(socket_);
}

std::expected<std::uint32_t, KernelError> NetlinkRulesetBackend::generation() {
    auto socket = this->socket();
    if (!socket) {
        return std::unexpected(socket.error());
    }
    auto id = (*socket)->generation(next_seq_++);
    if (!id) {
        socket_.reset();
    }
    return id;
}

std::expected<DriftReport, KernelError> NetlinkRulesetBackend::check(const ruleset::Ruleset& desired) {
    auto socket = this->socket();
    if (!socket) {
        return std::unexpected(socket.error());
    }
    auto table = detail::read_table(**socket, next_seq_);
    if (!table) {
        socket_.reset();
        return std::unexpected(table.error());
    }
    return detail::compare(*table, desired);
}

namespace {

struct Transaction {
    const Batch& batch;
    const ruleset::Ruleset& desired;
    bool commit = true;
    // The same batch without its end message, to learn why a batch whose ACKs were lost did
    // not commit.
    std::function<std::expected<Batch, KernelError>(std::uint32_t first_seq)> check_batch;
};

std::expected<ApplyStats, KernelError> run(detail::NetlinkSocket* socket, const Transaction& tx,
                                           const NetlinkOptions& options, std::uint32_t& seq,
                                           Clock::time_point start) {
    // No generation read before the batch: it would cost every apply (a quarantine above all)
    // a netlink round trip, for the rare batch whose ACKs are lost, which the table itself
    // settles below.
    ApplyStats stats;
    stats.messages = tx.batch.messages().size();
    stats.bytes = tx.batch.bytes();
    stats.elements = tx.batch.elements();

    auto outcome = socket->send_batch(tx.batch, options.receive_buffer);
    if (!outcome) {
        return std::unexpected(outcome.error());
    }
    if (!outcome->errors.empty()) {
        // Any error aborts the whole transaction: the kernel holds the previous ruleset.
        return std::unexpected(describe_failure(tx.batch, *outcome));
    }
    if (!outcome->complete()) {
        // ACKs were lost (ENOBUFS): an error may have been among them. The table tells
        // whether the transaction committed: it holds the desired ruleset, or it does not.
        stats.acks_incomplete = true;
        const std::string why = outcome->enobufs ? "ENOBUFS" : "missing ACKs";
        if (!tx.commit) {
            return std::unexpected(KernelError{
                "check batch ACKs lost (" + why + "): validity unknown", ENOBUFS, "batch"});
        }
        auto table = detail::read_table(*socket, seq);
        if (!table) {
            return std::unexpected(table.error());
        }
        if (!detail::compare(*table, tx.desired).clean()) {
            // Not committed, and the error was among the lost ACKs: send the batch again in
            // check mode (no end message, nothing commits) with a receive buffer sized for
            // every ACK, to name the object the kernel refuses.
            if (tx.check_batch) {
                auto check = tx.check_batch(seq);
                if (check) {
                    seq += static_cast<std::uint32_t>(check->messages().size());
                    auto diagnosis = socket->send_batch(*check, 0);
                    if (diagnosis && !diagnosis->errors.empty()) {
                        auto e = describe_failure(*check, *diagnosis);
                        e.message = "ACKs lost (" + why + "); a check-mode resend found: " + e.message;
                        return std::unexpected(e);
                    }
                }
            }
            return std::unexpected(KernelError{
                "the batch's ACKs were lost (" + why + ") and the kernel's table is not the ruleset: "
                "not committed, or changed since; the kernel's reason is unknown",
                outcome->enobufs ? ENOBUFS : EIO, "table inet bulkhead"});
        }
        stats.generation = table->generation;
    } else {
        auto after = socket->generation(seq++);
        if (!after) {
            return std::unexpected(after.error());
        }
        stats.generation = *after;
    }
    stats.latency = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start);
    return stats;
}

}  // namespace

namespace {

// run() on the backend's kept socket; any failure drops the socket so the next call starts
// on a fresh one.
std::expected<ApplyStats, KernelError> run_held(std::shared_ptr<detail::NetlinkSocket>& holder,
                                                const Transaction& tx, const NetlinkOptions& options,
                                                std::uint32_t& seq, Clock::time_point start) {
    auto socket = ensure_open(holder);
    if (!socket) {
        return std::unexpected(socket.error());
    }
    auto result = run(*socket, tx, options, seq, start);
    if (!result) {
        holder.reset();
    }
    return result;
}

}  // namespace

std::expected<ApplyStats, KernelError> NetlinkRulesetBackend::replace(const ruleset::Ruleset& desired) {
    const auto start = Clock::now();
    BatchOptions opts{options_.page_size, next_seq_, true};
    auto batch = build_replace_batch(desired, opts);
    if (!batch) {
        return std::unexpected(batch.error());
    }
    next_seq_ += static_cast<std::uint32_t>(batch->messages().size());
    auto check = [&](std::uint32_t first_seq) {
        return build_replace_batch(desired, {options_.page_size, first_seq, false});
    };
    return run_held(socket_, {*batch, desired, true, check}, options_, next_seq_, start);
}

std::expected<ApplyStats, KernelError> NetlinkRulesetBackend::validate(const ruleset::Ruleset& desired) {
    const auto start = Clock::now();
    BatchOptions opts{options_.page_size, next_seq_, false};
    auto batch = build_replace_batch(desired, opts);
    if (!batch) {
        return std::unexpected(batch.error());
    }
    next_seq_ += static_cast<std::uint32_t>(batch->messages().size());
    return run_held(socket_, {*batch, desired, false, {}}, options_, next_seq_, start);
}

std::expected<ApplyStats, KernelError> NetlinkRulesetBackend::apply_diff(
    const ruleset::RulesetDiff& diff, const ruleset::Ruleset& desired) {
    if (diff.full_replace) {
        return replace(desired);
    }
    const auto start = Clock::now();
    if (diff.empty()) {
        auto gen = generation();
        if (!gen) {
            return std::unexpected(gen.error());
        }
        ApplyStats stats;
        stats.generation = *gen;
        stats.latency = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start);
        return stats;
    }
    BatchOptions opts{options_.page_size, next_seq_, true};
    auto batch = build_diff_batch(diff, desired, opts);
    if (!batch) {
        return std::unexpected(batch.error());
    }
    next_seq_ += static_cast<std::uint32_t>(batch->messages().size());
    auto check = [&](std::uint32_t first_seq) {
        return build_diff_batch(diff, desired, {options_.page_size, first_seq, false});
    };
    return run_held(socket_, {*batch, desired, true, check}, options_, next_seq_, start);
}

namespace {

// One kernel error of an element-change transaction, named after the element it points at.
KernelError element_error(const Batch& batch, const detail::AckError& e) {
    KernelError k;
    k.error_number = e.error_number;
    const BatchMessage* message = batch.find(e.seq);
    if (message != nullptr && message->type == NFNL_MSG_BATCH_BEGIN) {
        k.object = "batch";
        k.message = "the kernel could not commit the transaction";
    } else {
        k.object = batch.object_at(e.seq, e.offset);
        k.message = "the kernel rejected " + (k.object.empty() ? std::string("a message") : k.object);
    }
    k.message += ": " + std::string(std::strerror(e.error_number));
    if (!e.extack.empty()) {
        k.message += " (" + e.extack + ")";
    }
    return k;
}

}  // namespace

ElementChangesReport NetlinkRulesetBackend::apply_element_changes(std::span<const ElementChange> changes,
                                                                  const ruleset::Ruleset& current,
                                                                  ElementCommit mode) {
    const auto start = Clock::now();
    ElementChangesReport report;
    report.results.resize(changes.size());
    auto finish = [&]() {
        report.latency = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start);
        return std::move(report);
    };
    if (changes.empty()) {
        return finish();
    }
    auto socket = this->socket();
    if (!socket) {
        for (auto& r : report.results) {
            r.error = socket.error();
        }
        return finish();
    }
    constexpr std::size_t window = 256;         // transactions per sendmmsg()
    constexpr std::size_t coalesced_rounds = 4;  // then the rest one transaction per change
    std::vector<std::size_t> todo(changes.size());
    for (std::size_t i = 0; i < todo.size(); ++i) {
        todo[i] = i;
    }
    std::vector<std::size_t> unknown;  // ACKs lost: decided from the table afterwards
    bool transport_failed = false;
    ElementCommit round_mode = mode;
    for (std::size_t round = 0; round <= coalesced_rounds && !todo.empty(); ++round) {
        if (round == coalesced_rounds) {
            round_mode = ElementCommit::PipelinedPerChange;
        }
        auto built = build_element_change_batch(changes, todo, current, round_mode,
                                                {options_.page_size, next_seq_, true});
        next_seq_ += static_cast<std::uint32_t>(built.batch.messages().size());
        for (auto& [index, error] : built.refused) {
            report.results[index].error = std::move(error);
        }
        todo.clear();
        if (built.transactions.empty()) {
            break;
        }
        auto out = (*socket)->send_transactions(built.batch, built.transactions, window,
                                                options_.receive_buffer);
        report.send_calls += out.send_calls;
        bool go_strict = false;
        for (std::size_t t = 0; t < built.transactions.size(); ++t) {
            const auto& tx = built.transactions[t];
            const auto& to = out.transactions[t];
            if (!to.sent) {
                for (const auto c : tx.changes) {
                    report.results[c].error = out.transport_error.value_or(
                        KernelError{"the transaction was not sent", EIO, "batch"});
                }
                continue;
            }
            const std::size_t tx_index = report.transactions++;
            for (const auto c : tx.changes) {
                report.results[c].transaction = tx_index;
            }
            if (to.errors.empty()) {
                if (to.acks == to.expected_acks) {
                    ++report.committed;
                } else {
                    unknown.insert(unknown.end(), tx.changes.begin(), tx.changes.end());
                }
                continue;
            }
            // Aborted: nothing of this transaction is in the kernel. Each error the kernel
            // pinned on a change fails that change; the others are retried.
            std::set<std::size_t> refused;
            bool unattributed = false;
            if (round_mode == ElementCommit::Coalesced) {
                for (const auto& e : to.errors) {
                    if (const auto c = built.batch.change_at(e.seq, e.offset)) {
                        if (refused.insert(*c).second) {
                            report.results[*c].error = element_error(built.batch, e);
                        }
                    } else {
                        unattributed = true;
                    }
                }
            } else {
                // One change: the transaction's first error is the change's.
                auto errors = to.errors;
                std::sort(errors.begin(), errors.end(),
                          [](const auto& a, const auto& b) { return a.seq < b.seq; });
                report.results[tx.changes.front()].error = element_error(built.batch, errors.front());
                continue;
            }
            go_strict = go_strict || unattributed;
            for (const auto c : tx.changes) {
                if (!refused.contains(c)) {
                    todo.push_back(c);
                }
            }
        }
        if (out.transport_error) {
            transport_failed = true;
            break;
        }
        if (go_strict) {
            // An error that names no change (a commit error, no element offset): decide the
            // rest one transaction per change.
            round_mode = ElementCommit::PipelinedPerChange;
        }
        if (out.enobufs) {
            report.acks_incomplete = true;
        }
    }
    if (transport_failed) {
        socket_.reset();
        return finish();
    }
    if (!unknown.empty()) {
        // Some ACKs never came (ENOBUFS): read the table and decide those changes by what it
        // holds (an addition is done if the element is there, a removal if it is not).
        report.acks_incomplete = true;
        auto table = detail::read_table(**socket, next_seq_);
        for (const auto c : unknown) {
            const auto& change = changes[c];
            if (!table) {
                report.results[c].error = KernelError{
                    "ACKs lost and the table could not be read back: " + table.error().message,
                    table.error().error_number, "set " + change.set};
                continue;
            }
            const auto* set = current.find_set(change.set);
            const auto kernel = std::find_if(table->sets.begin(), table->sets.end(),
                                             [&](const auto& s) { return s.name == change.set; });
            bool present = false;
            if (set != nullptr && kernel != table->sets.end()) {
                const auto decoded = detail::decode_elements(*set, kernel->elements);
                present = std::binary_search(decoded.elements.begin(), decoded.elements.end(),
                                             change.element);
            }
            const bool done = present == (change.kind == ElementChange::Kind::Add);
            report.results[c].settled_from_table = true;
            if (!done) {
                report.results[c].error = KernelError{
                    "ACKs lost (ENOBUFS) and the kernel's set " + change.set +
                        (present ? " still holds " : " lacks ") + "the element: not committed",
                    EIO, "set " + change.set};
            }
        }
        if (!table) {
            socket_.reset();
            return finish();
        }
    }
    if (auto gen = (*socket)->generation(next_seq_++)) {
        report.generation = *gen;
    } else {
        socket_.reset();
    }
    return finish();
}

}  // namespace bulkhead::enforcer
