// PeriodicTask: one background thread that runs a task at an interval until it is stopped,
// for the controller's housekeeping (evidence checkpoints, archiving). Stopping wakes the
// thread at once rather than at the end of its interval.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

namespace bulkhead::controller {

class PeriodicTask {
public:
    struct Schedule {
        std::chrono::milliseconds interval{60'000};
        bool run_at_start = false;  // once when started, before the first interval
        bool run_at_stop = false;   // once more when stopped (a last checkpoint)
    };

    PeriodicTask(Schedule schedule, std::function<void()> task)
        : schedule_(schedule), task_(std::move(task)) {}
    ~PeriodicTask() { stop(); }
    PeriodicTask(const PeriodicTask&) = delete;
    PeriodicTask& operator=(const PeriodicTask&) = delete;

    void start() {
        std::lock_guard lock(mutex_);
        if (worker_.joinable())
            return;
        stopping_ = false;
        worker_ = std::thread([this] { run(); });
    }

    void stop() {
        {
            std::lock_guard lock(mutex_);
            if (!worker_.joinable())
                return;
            stopping_ = true;
        }
        wake_.notify_all();
        worker_.join();
    }

private:
    void run() {
        if (schedule_.run_at_start)
            task_();
        for (;;) {
            bool stopped = false;
            {
                std::unique_lock lock(mutex_);
                stopped = wake_.wait_for(lock, schedule_.interval, [this] { return stopping_; });
            }
            if (!stopped || schedule_.run_at_stop)
                task_();
            if (stopped)
                return;
        }
    }

    Schedule schedule_;
    std::function<void()> task_;
    std::mutex mutex_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::thread worker_;
};

}  // namespace bulkhead::controller
