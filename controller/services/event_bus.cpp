#include "controller/services/event_bus.hpp"

namespace bulkhead::controller {

std::vector<BusMessage> EventBus::Subscription::next(std::chrono::milliseconds timeout,
                                                     std::uint64_t& lost) {
    std::unique_lock lock(mutex_);
    ready_.wait_for(lock, timeout, [&] { return closed_ || !queue_.empty(); });
    std::vector<BusMessage> out(std::make_move_iterator(queue_.begin()),
                                std::make_move_iterator(queue_.end()));
    queue_.clear();
    lost = lost_;
    lost_ = 0;
    return out;
}

void EventBus::Subscription::close() {
    std::function<void()> wake;
    {
        std::lock_guard lock(mutex_);
        closed_ = true;
        wake = wake_;
    }
    ready_.notify_all();
    if (wake) {
        wake();
    }
}

void EventBus::Subscription::set_wake(std::function<void()> wake) {
    std::lock_guard lock(mutex_);
    wake_ = std::move(wake);
}

bool EventBus::Subscription::closed() const {
    std::lock_guard lock(mutex_);
    return closed_;
}

void EventBus::Subscription::push(const BusMessage& message) {
    std::function<void()> wake;
    {
        std::lock_guard lock(mutex_);
        if (closed_) {
            return;
        }
        if (queue_.size() >= capacity_) {
            queue_.pop_front();
            ++lost_;
        }
        queue_.push_back(message);
        wake = wake_;
    }
    ready_.notify_one();
    if (wake) {
        wake();
    }
}

std::shared_ptr<EventBus::Subscription> EventBus::subscribe(std::size_t capacity) {
    auto subscription = std::make_shared<Subscription>(capacity);
    std::lock_guard lock(mutex_);
    subscriptions_.push_back(subscription);
    return subscription;
}

void EventBus::unsubscribe(const std::shared_ptr<Subscription>& subscription) {
    subscription->close();
    std::lock_guard lock(mutex_);
    subscriptions_.remove(subscription);
}

void EventBus::publish(std::string event, const nlohmann::json& data) {
    BusMessage message;
    message.event = std::move(event);
    message.data = data.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    std::lock_guard lock(mutex_);
    message.id = next_id_++;
    for (const auto& subscription : subscriptions_) {
        subscription->push(message);
    }
}

void EventBus::close_all() {
    std::lock_guard lock(mutex_);
    for (const auto& subscription : subscriptions_) {
        subscription->close();
    }
    subscriptions_.clear();
}

std::size_t EventBus::subscribers() const {
    std::lock_guard lock(mutex_);
    return subscriptions_.size();
}

}  // namespace bulkhead::controller
