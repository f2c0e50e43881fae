// EventBus: fan-out of live events (drops, incidents, quarantine and enforcer changes) to
// dashboard streams (Server-Sent Events). Each subscriber has a bounded queue; a slow
// browser loses its oldest messages and is told how many, it never slows ingest down.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace bulkhead::controller {

struct BusMessage {
    std::uint64_t id = 0;
    std::string event;  // SSE event name: "drops", "incident", "quarantine", "enforcer", ...
    std::string data;   // JSON text
};

class EventBus {
public:
    class Subscription {
    public:
        explicit Subscription(std::size_t capacity) : capacity_(capacity) {}
        // Waits up to `timeout` for messages; returns what is queued (possibly nothing)
        // and, through `lost`, how many were dropped since the last call.
        std::vector<BusMessage> next(std::chrono::milliseconds timeout, std::uint64_t& lost);
        void close();
        bool closed() const;
        // Called (from the publishing thread, outside the queue's lock) after each message
        // and on close, so an event-driven server need not wait in next(). Must only schedule.
        void set_wake(std::function<void()> wake);

    private:
        friend class EventBus;
        void push(const BusMessage& message);
        mutable std::mutex mutex_;
        std::condition_variable ready_;
        std::deque<BusMessage> queue_;
        std::size_t capacity_;
        std::uint64_t lost_ = 0;
        bool closed_ = false;
        std::function<void()> wake_;
    };

    std::shared_ptr<Subscription> subscribe(std::size_t capacity = 4096);
    void unsubscribe(const std::shared_ptr<Subscription>& subscription);
    void publish(std::string event, const nlohmann::json& data);
    // Closes every subscription (shutdown): streams end instead of holding threads.
    void close_all();
    std::size_t subscribers() const;

private:
    mutable std::mutex mutex_;
    std::list<std::shared_ptr<Subscription>> subscriptions_;
    std::uint64_t next_id_ = 1;
};

}  // namespace bulkhead::controller
