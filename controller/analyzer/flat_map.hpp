// FlatMap: an open-addressing hash map from 64-bit integer keys to small values, used by
// the analyzer for its per-source and per-target state (interned ids packed into keys).
// Linear probing, backward-shift deletion (no tombstones, so a map that sees many inserts
// and erases never degrades), load factor at most 3/4. One allocation per growth, none per
// insert otherwise. Key ~0 is reserved as the empty marker. Internal to the analyzer.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

namespace bulkhead::analyzer::detail {

template <class V> class FlatMap {
  public:
    static constexpr std::uint64_t empty_key = ~std::uint64_t{0};

    std::size_t size() const { return size_; }
    bool empty() const { return size_ == 0; }

    // (Always inlined: the per-event path calls it from many places, and an out-of-line
    // call there cost the analyzer ~4 % of its throughput.)
    [[gnu::always_inline]] V* find(std::uint64_t key) {
        if (slots_.empty()) {
            return nullptr;
        }
        for (std::size_t i = home(key);; i = (i + 1) & mask_) {
            if (slots_[i].key == key) {
                return &slots_[i].value;
            }
            if (slots_[i].key == empty_key) {
                return nullptr;
            }
        }
    }
    [[gnu::always_inline]] const V* find(std::uint64_t key) const {
        return const_cast<FlatMap*>(this)->find(key);
    }

    // The value for `key`, inserted as `V{}` when absent; `inserted` tells which.
    V& get_or_insert(std::uint64_t key, bool& inserted) {
        if ((size_ + 1) * 4 > slots_.size() * 3) {
            grow();
        }
        std::size_t i = home(key);
        for (;; i = (i + 1) & mask_) {
            if (slots_[i].key == key) {
                inserted = false;
                return slots_[i].value;
            }
            if (slots_[i].key == empty_key) {
                break;
            }
        }
        slots_[i].key = key;
        slots_[i].value = V{};
        ++size_;
        inserted = true;
        return slots_[i].value;
    }

    bool erase(std::uint64_t key) {
        if (slots_.empty()) {
            return false;
        }
        std::size_t i = home(key);
        for (;; i = (i + 1) & mask_) {
            if (slots_[i].key == key) {
                break;
            }
            if (slots_[i].key == empty_key) {
                return false;
            }
        }
        // Backward shift: pull later members of the probe run into the hole unless their
        // home lies cyclically in (hole, j].
        std::size_t j = i;
        for (;;) {
            j = (j + 1) & mask_;
            if (slots_[j].key == empty_key) {
                break;
            }
            const std::size_t k = home(slots_[j].key);
            const bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
            if (stays) {
                continue;
            }
            slots_[i] = std::move(slots_[j]);
            i = j;
        }
        slots_[i].key = empty_key;
        slots_[i].value = V{};
        --size_;
        return true;
    }

    template <class F> void for_each(F&& f) const {
        for (const auto& slot : slots_) {
            if (slot.key != empty_key) {
                f(slot.key, slot.value);
            }
        }
    }

    void clear_and_release() {
        std::vector<Slot>().swap(slots_);
        size_ = 0;
        mask_ = 0;
    }

    std::size_t memory_bytes() const { return slots_.capacity() * sizeof(Slot); }

  private:
    struct Slot {
        std::uint64_t key = empty_key;
        V value{};
    };

    static std::uint64_t mix(std::uint64_t k) {
        k ^= k >> 33;
        k *= 0xff51afd7ed558ccdULL;
        k ^= k >> 33;
        k *= 0xc4ceb9fe1a85ec53ULL;
        k ^= k >> 33;
        return k;
    }
    std::size_t home(std::uint64_t key) const { return static_cast<std::size_t>(mix(key)) & mask_; }

    void grow() {
        std::vector<Slot> old;
        old.swap(slots_);
        const std::size_t capacity = old.empty() ? 4 : old.size() * 2;
        slots_.resize(capacity);
        mask_ = capacity - 1;
        size_ = 0;
        for (auto& slot : old) {
            if (slot.key != empty_key) {
                bool inserted = false;
                get_or_insert(slot.key, inserted) = std::move(slot.value);
            }
        }
    }

    std::vector<Slot> slots_;
    std::size_t size_ = 0;
    std::size_t mask_ = 0;
};

// Ring: a FIFO in one power-of-two buffer that grows by doubling (from 4), for the sliding
// windows' time-ordered entries. Unlike std::deque it costs nothing while empty and a few
// dozen bytes when small, which matters with tens of thousands of windows.
template <class T> class Ring {
  public:
    bool empty() const { return size_ == 0; }
    std::size_t size() const { return size_; }
    const T& front() const { return buf_[head_]; }
    void pop_front() {
        head_ = (head_ + 1) & (buf_.size() - 1);
        --size_;
    }
    void push_back(const T& value) {
        if (size_ == buf_.size()) {
            grow();
        }
        buf_[(head_ + size_) & (buf_.size() - 1)] = value;
        ++size_;
    }
    void release() {
        std::vector<T>().swap(buf_);
        head_ = size_ = 0;
    }
    // Oldest first.
    template <class F> void for_each(F&& f) const {
        for (std::size_t i = 0; i < size_; ++i) {
            f(buf_[(head_ + i) & (buf_.size() - 1)]);
        }
    }
    std::size_t memory_bytes() const { return buf_.capacity() * sizeof(T); }

  private:
    void grow() {
        std::vector<T> bigger(buf_.empty() ? 4 : buf_.size() * 2);
        for (std::size_t i = 0; i < size_; ++i) {
            bigger[i] = buf_[(head_ + i) & (buf_.size() - 1)];
        }
        buf_.swap(bigger);
        head_ = 0;
    }
    std::vector<T> buf_;
    std::size_t head_ = 0;
    std::size_t size_ = 0;
};

} // namespace bulkhead::analyzer::detail
