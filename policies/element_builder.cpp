#include "policies/element_builder.hpp"

#include <algorithm>

namespace bulkhead::ruleset {
namespace {

using policy::IpAddress;

struct Rect {
    NumberRange second;
    NumberRange third;
};

// Union of rectangles in (second, third) as disjoint rectangles: split `second` at every
// boundary, union `third` within each slice, then re-join neighbouring slices whose
// `third` cover is identical.
std::vector<Rect> union_2d(const std::vector<Rect>& rects) {
    std::vector<std::uint32_t> cuts;
    for (const auto& r : rects) {
        cuts.push_back(r.second.low);
        cuts.push_back(r.second.high + 1);
    }
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());

    std::vector<Rect> out;
    std::vector<NumberRange> previous_cover;
    for (std::size_t k = 0; k + 1 < cuts.size(); ++k) {
        const NumberRange slice{cuts[k], cuts[k + 1] - 1};
        std::vector<NumberRange> cover;
        for (const auto& r : rects) {
            if (r.second.low <= slice.low && slice.high <= r.second.high) {
                cover.push_back(r.third);
            }
        }
        std::sort(cover.begin(), cover.end());
        std::vector<NumberRange> merged;
        for (const auto& c : cover) {
            if (!merged.empty() && c.low <= merged.back().high + 1) {
                merged.back().high = std::max(merged.back().high, c.high);
            } else {
                merged.push_back(c);
            }
        }
        const bool joins_previous = !out.empty() && !merged.empty() &&
                                    out.back().second.high + 1 == slice.low &&
                                    merged == previous_cover;
        if (joins_previous) {
            // Extend every rectangle of the previous slice.
            for (auto it = out.rbegin(); it != out.rend() && it->second.high + 1 == slice.low;
                 ++it) {
                it->second.high = slice.high;
            }
        } else {
            for (const auto& m : merged) {
                out.push_back({slice, m});
            }
        }
        previous_cover = std::move(merged);
    }
    return out;
}

IpAddress family_max(const IpAddress& like) {
    IpAddress a;
    a.family = like.family;
    for (std::size_t i = 0; i < a.width(); ++i) {
        a.bytes[i] = 0xff;
    }
    return a;
}

}  // namespace

ElementList disjoint_elements(std::vector<Box> boxes, bool three_parts) {
    ElementList out;
    if (boxes.empty()) {
        return out;
    }
    if (!three_parts) {
        for (auto& b : boxes) {
            b.third = {0, 0};
        }
    }
    std::sort(boxes.begin(), boxes.end(), [](const Box& a, const Box& b) {
        return a.address.low < b.address.low;
    });
    std::vector<IpAddress> cuts;
    cuts.reserve(boxes.size() * 2);
    for (const auto& b : boxes) {
        cuts.push_back(b.address.low);
        IpAddress after = b.address.high;
        if (policy::increment(after)) {
            cuts.push_back(after);
        }
    }
    std::sort(cuts.begin(), cuts.end());
    cuts.erase(std::unique(cuts.begin(), cuts.end()), cuts.end());

    std::vector<const Box*> active;
    std::size_t next_box = 0;
    std::vector<Rect> rects;
    for (std::size_t k = 0; k < cuts.size(); ++k) {
        const IpAddress& start = cuts[k];
        while (next_box < boxes.size() && boxes[next_box].address.low <= start) {
            active.push_back(&boxes[next_box]);
            ++next_box;
        }
        std::erase_if(active, [&](const Box* b) { return b->address.high < start; });
        if (active.empty()) {
            continue;
        }
        IpAddress end = family_max(start);
        if (k + 1 < cuts.size()) {
            end = cuts[k + 1];
            policy::decrement(end);
        }
        rects.clear();
        for (const Box* b : active) {
            rects.push_back({b->second, b->third});
        }
        for (const auto& r : union_2d(rects)) {
            Element e;
            e.key.emplace_back(policy::IpRange{start, end});
            e.key.emplace_back(r.second);
            if (three_parts) {
                e.key.emplace_back(r.third);
            }
            out.push_back(std::move(e));
        }
    }
    std::sort(out.begin(), out.end());
    return out;
}

ElementList merged_address_elements(std::vector<IpRange> ranges) {
    std::sort(ranges.begin(), ranges.end());
    std::vector<IpRange> merged;
    for (const auto& r : ranges) {
        // Overlaps must merge (the kernel refuses them); neighbours stay apart so that one
        // host address remains one element and adding a neighbour adds, never rewrites.
        if (!merged.empty() && merged.back().family() == r.family() && r.low <= merged.back().high) {
            merged.back().high = std::max(merged.back().high, r.high);
            continue;
        }
        merged.push_back(r);
    }
    ElementList out;
    for (const auto& r : merged) {
        out.push_back(Element{{r}, {}});
    }
    return out;
}

}  // namespace bulkhead::ruleset
